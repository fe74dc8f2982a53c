// Command ackbench measures the order loop through the ERP: a partner's order committed
// to a one-node control plane → routed to a real agent's sql sink connector (the
// built-in, run as a plugin subprocess of -bin) → written into SQLite staging tables
// (header and lines, the shape of docs/connectors.md) → the agent's order.ack committed.
// The latency is the ack's commit time minus the order's publish time (both taken on
// this machine's clock), for -rate orders/s over -seconds, p50 and p99; each figure is
// the median over -runs runs, with the spread (min–max) across runs.
//
// The orders enter through the agent's Publish with the partner API's ids and keys
// (canonical.OrderEventID, OrderID); SubmitOrder adds its own raft commit in front.
//
//	go run ./bench/ackbench -bin bin/crossdock -rate 50 -seconds 10 -runs 3
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	_ "modernc.org/sqlite"
)

const docs = `apiVersion: crossdock.io/v1
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
	var p50s, p99s []time.Duration
	for r := range *runs {
		l, err := run(self, *rate, *seconds, r)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ackbench:", err)
			os.Exit(1)
		}
		fmt.Printf("run %d: %d orders at %d/s: order published → order.ack committed p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
			r+1, len(l), *rate, ms(l[len(l)/2]), ms(l[len(l)*99/100]), ms(l[len(l)-1]))
		p50s, p99s = append(p50s, l[len(l)/2]), append(p99s, l[len(l)*99/100])
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	fmt.Printf("order → order.ack through an agent's sql sink into SQLite, %d orders/s, %d runs: p50 %.1f ms (%.1f–%.1f), p99 %.1f ms (%.1f–%.1f)\n",
		*rate, *runs, ms(p50s[len(p50s)/2]), ms(p50s[0]), ms(p50s[len(p50s)-1]), ms(p99s[len(p99s)/2]), ms(p99s[0]), ms(p99s[len(p99s)-1]))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(self string, rate, seconds, r int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "ackbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := controlplane.New(ctx, controlplane.Config{NodeID: "bench", DataDir: filepath.Join(dir, "cp"),
		Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true})
	if err != nil {
		return nil, err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	defer func() { cancel(); <-srvDone }()

	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		return nil, err
	}
	admin, closeAdmin, err := cc.AdminClient()
	if err != nil {
		return nil, err
	}
	defer closeAdmin()
	hc, base, closeHTTP, err := cc.HTTPClient()
	if err != nil {
		return nil, err
	}
	defer closeHTTP()
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		return nil, fmt.Errorf("apply routing documents: %w", err)
	}
	tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT,
		Ttl: durationpb.New(time.Minute), AgentName: "bench-agent"}))
	if err != nil {
		return nil, err
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
		return nil, err
	}
	if err := createSchema(dsn); err != nil {
		return nil, err
	}
	ag, err := agent.New(ctx, agent.Config{DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.Addr()},
		EnrollToken: tok.Msg.GetToken(), LocalAddr: "-", PluginSelf: self,
		Connectors: []pluginhost.Connector{{Name: "erp", Builtin: "sql", Settings: settings, NoSource: true}}})
	if err != nil {
		return nil, err
	}
	actx, acancel := context.WithCancel(ctx)
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(actx) }()
	defer func() { acancel(); <-agDone }()

	// One warm-up order, so the plugin is up and the route known before timing.
	published := map[string]time.Time{}
	l := srv.Store().Ledger()
	submit := func(po string) error {
		id := canonical.OrderID("bench-partner", po)
		ev := &eventv1.Event{Id: canonical.OrderEventID("bench-partner", po), Type: "order", Keys: map[string]string{"order": id},
			Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: id, Partner: "bench-partner", PurchaseOrderNumber: po,
				Currency: "EUR", Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2", UnitPrice: "1.25"},
					{LineNumber: "2", Sku: "SKU-2", Quantity: "1", UnitPrice: "3.00"}}}}}
		published[id] = time.Now()
		_, err := ag.Publish(ctx, "partner-api", []*eventv1.Event{ev})
		return err
	}
	if err := submit(fmt.Sprintf("WARM-%d", r)); err != nil {
		return nil, err
	}
	if _, err := waitAcks(l, 1, 2*time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up order: %w", err)
	}
	warm := published
	published = map[string]time.Time{}
	total := rate * seconds
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := range total {
		<-tick.C
		if err := submit(fmt.Sprintf("PO-%d-%06d", r, i)); err != nil {
			tick.Stop()
			return nil, fmt.Errorf("publish order %d: %w", i, err)
		}
	}
	tick.Stop()
	acks, err := waitAcks(l, total+1, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	var lat []time.Duration
	for _, ce := range acks {
		a := ce.GetEvent().GetOrderAck()
		if _, ok := warm[a.GetOrderNumber()]; ok {
			continue
		}
		if a.GetStatus() != "accepted" || a.GetErpOrderNumber() == "" {
			return nil, fmt.Errorf("order %s answered %s (%s)", a.GetOrderNumber(), a.GetStatus(), a.GetMessage())
		}
		at, ok := published[a.GetOrderNumber()]
		if !ok {
			return nil, fmt.Errorf("ack for an order not submitted: %s", a.GetOrderNumber())
		}
		lat = append(lat, ce.GetCommittedAt().AsTime().Sub(at))
	}
	if len(lat) != total {
		return nil, fmt.Errorf("%d acks for %d orders", len(lat), total)
	}
	slices.Sort(lat)
	return lat, nil
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
