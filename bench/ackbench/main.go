// Command ackbench measures the order loop through the ERP: a partner's order submitted
// with its key (SubmitOrder, HTTP/2 with TLS) to a one-node control plane → committed →
// routed to a real agent's sql sink connector (the built-in, run as a plugin subprocess
// of -bin) → written into SQLite staging tables (header and lines, the shape of
// docs/connectors.md) → the agent's order.ack committed → the order's status accepted
// in the order view (GetOrder). The latency is the time of the order's accepted step
// (the ack's commit) minus the moment SubmitOrder was called (both on this machine's
// clock), for -rate orders/s over -seconds, p50 and p99; each figure is the median over
// -runs runs, with the spread (min–max) across runs. SubmitOrder's own answer time is
// reported beside it.
//
//	go run ./bench/ackbench -bin bin/crossdock -rate 50 -seconds 10 -runs 3
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	_ "modernc.org/sqlite"
)

const docs = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: bench}
spec: {requestsPerSecond: 5000, burst: 5000, dailyQuota: 10000000, maxBodyBytes: 65536, maxItemsPerCall: 10}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bench-partner}
spec: {tier: bench, scopes: ["orders:write", "orders:read"], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: erp-staging}
spec: {type: agent, agent: bench-agent, connector: erp}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: partner-orders}
spec:
  match: {types: [order]}
  filter: event.order.partner != ""
  destinations: [erp-staging]
`

const schema = `
CREATE TABLE crossdock_order_in (import_no INTEGER PRIMARY KEY, order_id TEXT NOT NULL UNIQUE, partner TEXT NOT NULL,
  po_number TEXT NOT NULL, currency TEXT, status TEXT NOT NULL DEFAULT 'new');
CREATE TABLE crossdock_order_line_in (order_id TEXT NOT NULL REFERENCES crossdock_order_in (order_id), line_no TEXT NOT NULL,
  sku TEXT NOT NULL, quantity TEXT NOT NULL, unit_price TEXT, PRIMARY KEY (order_id, line_no));
`

func main() {
	bin := flag.String("bin", "bin/crossdock", "crossdock binary that serves the built-in sql connector")
	rate := flag.Int("rate", 50, "orders/s submitted")
	seconds := flag.Int("seconds", 10, "length of a run")
	runs := flag.Int("runs", 3, "runs; medians and spread are reported")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	self, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(self)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ackbench: -bin %s: %v (run make build first)\n", *bin, err)
		os.Exit(1)
	}
	var p50s, p99s, s50s, s99s []time.Duration
	for r := range *runs {
		l, sub, err := run(self, *rate, *seconds, r)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ackbench:", err)
			os.Exit(1)
		}
		fmt.Printf("run %d: %d orders at %d/s: SubmitOrder called → status accepted p50 %.1f ms, p99 %.1f ms, max %.1f ms; SubmitOrder answered p50 %.1f ms, p99 %.1f ms\n",
			r+1, len(l), *rate, ms(l[len(l)/2]), ms(l[len(l)*99/100]), ms(l[len(l)-1]), ms(sub[len(sub)/2]), ms(sub[len(sub)*99/100]))
		p50s, p99s = append(p50s, l[len(l)/2]), append(p99s, l[len(l)*99/100])
		s50s, s99s = append(s50s, sub[len(sub)/2]), append(s99s, sub[len(sub)*99/100])
	}
	med := func(d []time.Duration) string {
		slices.Sort(d)
		return fmt.Sprintf("%.1f ms (%.1f–%.1f)", ms(d[len(d)/2]), ms(d[0]), ms(d[len(d)-1]))
	}
	fmt.Printf("order submitted → accepted through an agent's sql sink into SQLite, %d orders/s, %d runs: p50 %s, p99 %s; SubmitOrder answered p50 %s, p99 %s\n",
		*rate, *runs, med(p50s), med(p99s), med(s50s), med(s99s))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(self string, rate, seconds, r int) (accepted, answered []time.Duration, err error) {
	dir, err := os.MkdirTemp("", "ackbench-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := controlplane.New(ctx, controlplane.Config{NodeID: "bench", DataDir: filepath.Join(dir, "cp"),
		Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true})
	if err != nil {
		return nil, nil, err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	defer func() { cancel(); <-srvDone }()

	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		return nil, nil, err
	}
	admin, closeAdmin, err := cc.AdminClient()
	if err != nil {
		return nil, nil, err
	}
	defer closeAdmin()
	hc, base, closeHTTP, err := cc.HTTPClient()
	if err != nil {
		return nil, nil, err
	}
	defer closeHTTP()
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		return nil, nil, fmt.Errorf("apply routing documents: %w", err)
	}
	tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT,
		Ttl: durationpb.New(time.Minute), AgentName: "bench-agent"}))
	if err != nil {
		return nil, nil, err
	}
	dsn := "file:" + filepath.Join(dir, "erp.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	settings, err := json.Marshal(map[string]any{"driver": "sqlite", "dsn": dsn, "sink": map[string]any{
		"header_statement": `INSERT INTO crossdock_order_in (order_id, partner, po_number, currency)
  VALUES (:order_number, :partner, :purchase_order_number, :currency) RETURNING import_no`,
		"statement": `INSERT INTO crossdock_order_line_in (order_id, line_no, sku, quantity, unit_price)
  VALUES (:order_number, :line, :sku, :qty, :price)`,
		"params":   map[string]string{"line": "lines.line_number", "sku": "lines.sku", "qty": "lines.quantity", "price": "lines.unit_price"},
		"for_each": "lines", "types": []string{"order"}, "returns_ref": true, "create_idempotency_table": true}})
	if err != nil {
		return nil, nil, err
	}
	if err := createSchema(dsn); err != nil {
		return nil, nil, err
	}
	ag, err := agent.New(ctx, agent.Config{DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.Addr()},
		EnrollToken: tok.Msg.GetToken(), LocalAddr: "-", PluginSelf: self,
		Connectors: []pluginhost.Connector{{Name: "erp", Builtin: "sql", Settings: settings, NoSource: true}}})
	if err != nil {
		return nil, nil, err
	}
	actx, acancel := context.WithCancel(ctx)
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(actx) }()
	defer func() { acancel(); <-agDone }()

	// The catalogue SubmitOrder checks SKUs against, committed like an ERP's items.
	items := []*eventv1.Event{
		{Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "SKU-1", Name: "One"}}},
		{Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "SKU-2", Name: "Two"}}},
	}
	if _, err := ag.Publish(ctx, "catalogue", items); err != nil {
		return nil, nil, err
	}
	key, err := partnerv1connect.NewPartnerAdminServiceClient(hc, base).CreateKey(ctx, connect.NewRequest(&partnerv1.CreateKeyRequest{Partner: "bench-partner"}))
	if err != nil {
		return nil, nil, fmt.Errorf("partner key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cc.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	pc := partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: tr, Timeout: 30 * time.Second}, "https://"+srv.Addr())
	call := func(req connect.AnyRequest) {
		req.Header().Set("Authorization", "Bearer "+key.Msg.GetKey())
	}
	var mu sync.Mutex
	called := map[string]time.Time{}
	submit := func(po string) error {
		req := connect.NewRequest(&partnerv1.SubmitOrderRequest{PurchaseOrderNumber: po, Currency: "EUR",
			Lines: []*partnerv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2", UnitPrice: "1.25"},
				{LineNumber: "2", Sku: "SKU-2", Quantity: "1", UnitPrice: "3.00"}}})
		call(req)
		start := time.Now()
		res, err := pc.SubmitOrder(ctx, req)
		if err != nil {
			return fmt.Errorf("SubmitOrder %s: %w", po, err)
		}
		mu.Lock()
		called[res.Msg.GetOrderId()] = start
		answered = append(answered, time.Since(start))
		mu.Unlock()
		return nil
	}
	// accepted waits for an order's status accepted and returns when its ack committed.
	accepted1 := func(id string, within time.Duration) (time.Time, error) {
		deadline := time.Now().Add(within)
		for {
			req := connect.NewRequest(&partnerv1.GetOrderRequest{OrderId: id})
			call(req)
			res, err := pc.GetOrder(ctx, req)
			if err != nil {
				return time.Time{}, fmt.Errorf("GetOrder %s: %w", id, err)
			}
			o := res.Msg.GetOrder()
			switch o.GetStatus() {
			case "accepted":
				for _, st := range o.GetSteps() {
					if st.GetEventType() == "order.ack" {
						return st.GetAt().AsTime(), nil
					}
				}
				return time.Time{}, fmt.Errorf("order %s accepted without an order.ack step", id)
			case "received":
			default:
				return time.Time{}, fmt.Errorf("order %s is %s (%s), want accepted", id, o.GetStatus(), o.GetMessage())
			}
			if time.Now().After(deadline) {
				return time.Time{}, fmt.Errorf("order %s not accepted after %s", id, within)
			}
			time.Sleep(20 * time.Millisecond) // polling the result; the latency is from commit times
		}
	}
	// One warm-up order, so the plugin is up and the route known before timing; it is
	// refused (unknown SKU) until the views have folded the catalogue published above.
	for deadline := time.Now().Add(time.Minute); ; {
		err := submit(fmt.Sprintf("WARM-%d", r))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || time.Now().After(deadline) {
			return nil, nil, err
		}
		time.Sleep(50 * time.Millisecond) // polling the views; the warm-up is not timed
	}
	for id := range called {
		if _, err := accepted1(id, 2*time.Minute); err != nil {
			return nil, nil, fmt.Errorf("warm-up order: %w", err)
		}
	}
	called, answered = map[string]time.Time{}, nil
	total := rate * seconds
	errs := make(chan error, total)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := range total {
		<-tick.C
		wg.Go(func() {
			if err := submit(fmt.Sprintf("PO-%d-%06d", r, i)); err != nil {
				errs <- err
			}
		})
	}
	tick.Stop()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, err
	}
	if _, err := waitAcks(srv.Store().Ledger(), total+1, 2*time.Minute); err != nil {
		return nil, nil, err
	}
	for id, at := range called {
		done, err := accepted1(id, time.Minute)
		if err != nil {
			return nil, nil, err
		}
		accepted = append(accepted, done.Sub(at))
	}
	if len(accepted) != total {
		return nil, nil, fmt.Errorf("%d orders accepted of %d submitted", len(accepted), total)
	}
	slices.Sort(accepted)
	slices.Sort(answered)
	return accepted, answered, nil
}

// waitAcks polls the ledger until n order.acks are committed.
func waitAcks(l *ledger.Ledger, n int, within time.Duration) ([]*eventv1.CommittedEvent, error) {
	deadline := time.Now().Add(within)
	for {
		acks, _, err := l.ListEvents(ledger.Filter{Type: "order.ack"}, 1, n+10)
		if err != nil {
			return nil, err
		}
		if len(acks) >= n {
			return acks, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d order.acks committed after %s", len(acks), n, within)
		}
		time.Sleep(20 * time.Millisecond) // polling the result; the latency is from commit times
	}
}

func createSchema(dsn string) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec(schema); err != nil {
		return fmt.Errorf("staging schema: %w", err)
	}
	return nil
}
