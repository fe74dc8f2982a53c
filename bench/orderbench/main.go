// Command orderbench measures SubmitOrder answered (committed through raft) on a 3-node
// control plane in this process (production raft timings, HTTP/2 with TLS, a partner
// key): the latency at a fixed rate (open loop, -rate orders/s spread over the three
// nodes, so two thirds are forwarded by a follower to the leader) and the orders/s at
// saturation (closed loop, -conc callers). Each order has 3 lines of catalog SKUs and a
// new purchase order number. It repeats each measurement -runs times and reports the
// median and the spread (min to max): the machine is usually shared, so single runs
// vary.
//
//	go run ./bench/orderbench -rate 200 -duration 10s -runs 3
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

const docs = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: bench}
spec: {requestsPerSecond: 100000, burst: 100000, dailyQuota: 1073741824, maxItemsPerCall: 100}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bench}
spec:
  tier: bench
  scopes: [orders:write, orders:read]
  skus: ["SKU-*"]
`

func main() {
	duration := flag.Duration("duration", 10*time.Second, "length of each measurement")
	rate := flag.Int("rate", 200, "orders/s of the fixed-rate measurement")
	conc := flag.Int("conc", 64, "concurrent callers of the saturation measurement")
	runs := flag.Int("runs", 3, "repetitions of each measurement")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the first saturation run to this file")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err := run(*duration, *rate, *conc, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "orderbench:", err)
		os.Exit(1)
	}
}

var cpuProfile string

type node struct {
	srv  *controlplane.Server
	stop func()
}

func poll(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func startNode(ctx context.Context, dir string, i int, join, token string) (*node, error) {
	cfg := controlplane.Config{NodeID: fmt.Sprintf("cp%d", i+1), DataDir: filepath.Join(dir, fmt.Sprint(i)), Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0",
		Bootstrap: join == "", DisableHTTP3: true, Logger: slog.Default()}
	if join != "" {
		cfg.Join, cfg.JoinToken = []string{join}, token
	}
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start node %d: %w", i+1, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(rctx) }()
	return &node{srv: srv, stop: func() { cancel(); <-done }}, nil
}

func run(duration time.Duration, rate, conc, runs int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "orderbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	first, err := startNode(ctx, dir, 0, "", "")
	if err != nil {
		return err
	}
	nodes := []*node{first}
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].stop()
		}
	}()
	cfg, err := cliconfig.Load(first.srv.AdminConfigPath())
	if err != nil {
		return err
	}
	hc, base, closeFn, err := cfg.HTTPClient()
	if err != nil {
		return err
	}
	defer closeFn()
	admin := adminv1connect.NewAdminServiceClient(hc, base)
	for i := 1; i < 3; i++ {
		var tok *connect.Response[adminv1.CreateTokenResponse]
		if err := poll(30*time.Second, "a server token", func() bool {
			tok, err = admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_SERVER, Ttl: durationpb.New(time.Minute)}))
			return err == nil
		}); err != nil {
			return err
		}
		n, err := startNode(ctx, dir, i, first.srv.Addr(), tok.Msg.GetToken())
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	if err := poll(60*time.Second, "3 voters", func() bool {
		st, err := admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		if err != nil || st.Msg.GetLeaderId() == "" {
			return false
		}
		v := 0
		for _, p := range st.Msg.GetPeers() {
			if p.GetRole() != "nonvoter" {
				v++
			}
		}
		return v == 3
	}); err != nil {
		return err
	}
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	// The catalog: 100 items, committed as an agent's batch.
	var leader *controlplane.Server
	for _, n := range nodes {
		if n.srv.Store().IsLeader() {
			leader = n.srv
		}
	}
	if leader == nil {
		return fmt.Errorf("no leader among the nodes")
	}
	b := &storev1.IngestBatch{AgentId: "catalog"}
	for i := range 100 {
		sku := fmt.Sprintf("SKU-%03d", i)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(i + 1), Event: &eventv1.Event{Id: "item-" + sku, Type: "item",
			Keys: map[string]string{"sku": sku}, Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: sku, Name: sku}}}})
	}
	res, err := leader.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	if err != nil {
		return fmt.Errorf("commit the catalog: %w", err)
	}
	seq := res.(*storev1.IngestResult).GetLastLedgerSeq()
	key, err := partnerv1connect.NewPartnerAdminServiceClient(hc, base).CreateKey(ctx, connect.NewRequest(&partnerv1.CreateKeyRequest{Partner: "bench"}))
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	for _, n := range nodes {
		if err := poll(30*time.Second, "the catalog and the key on every node", func() bool {
			_, ok, _ := n.srv.Store().Ledger().PartnerKey(key.Msg.GetInfo().GetId())
			return ok && n.srv.Views() != nil && n.srv.Views().Seq() >= seq
		}); err != nil {
			return err
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	var clients []partnerv1connect.PartnerServiceClient
	for _, n := range nodes {
		clients = append(clients, partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: bearer{key.Msg.GetKey(), tr}, Timeout: 10 * time.Second}, "https://"+n.srv.Addr()))
	}
	var po atomic.Int64
	submit := func(i int) (time.Duration, error) {
		n := po.Add(1)
		req := &partnerv1.SubmitOrderRequest{PurchaseOrderNumber: fmt.Sprintf("PO-%08d", n), Currency: "EUR"}
		for l := range 3 {
			req.Lines = append(req.Lines, &partnerv1.OrderLine{Sku: fmt.Sprintf("SKU-%03d", (int(n)*7+l*13)%100), Quantity: fmt.Sprint(1 + l), UnitPrice: "9.90"})
		}
		start := time.Now()
		_, err := clients[i%len(clients)].SubmitOrder(ctx, connect.NewRequest(req))
		return time.Since(start), err
	}
	for i := range 30 { // warm the connections
		if _, err := submit(i); err != nil {
			return fmt.Errorf("warm-up order: %w", err)
		}
	}
	for i := range len(clients) { // one at a time, per node: the floor of the latency
		var seqLat []time.Duration
		for range 20 {
			l, err := submit(i)
			if err != nil {
				return err
			}
			seqLat = append(seqLat, l)
		}
		sort.Slice(seqLat, func(a, b int) bool { return seqLat[a] < seqLat[b] })
		role := "follower"
		if nodes[i].srv.Store().IsLeader() {
			role = "leader"
		}
		fmt.Printf("  one at a time through %s (%s): p50 %.2f ms\n", nodes[i].srv.Addr(), role, ms(pct(seqLat, 0.5)))
	}
	fmt.Printf("orderbench SubmitOrder 3 nodes (in one process), 3 lines per order, h2+tls, calls spread over the nodes, runs=%d duration=%s (shared machine: figures vary with other load)\n", runs, duration)
	var p50s, p99s, maxes, sat []float64
	for r := range runs {
		lat, errs := fixedRate(submit, rate, duration)
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50s, p99s, maxes = append(p50s, ms(pct(lat, 0.50))), append(p99s, ms(pct(lat, 0.99))), append(maxes, ms(lat[len(lat)-1]))
		fmt.Printf("  run %d at %d orders/s: %d answered, %d errors, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", r+1, rate, len(lat), errs, p50s[r], p99s[r], maxes[r])
		if cpuProfile != "" && r == 0 {
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
		}
		n, serrs := saturate(submit, conc, duration)
		if cpuProfile != "" && r == 0 {
			pprof.StopCPUProfile()
		}
		sat = append(sat, float64(n)/duration.Seconds())
		fmt.Printf("  run %d saturation (%d callers): %.0f orders/s, %d errors\n", r+1, conc, sat[r], serrs)
	}
	fmt.Printf("orderbench at %d orders/s: p50 median %.2f ms (%.2f-%.2f), p99 median %.2f ms (%.2f-%.2f), max median %.2f ms; target p99 < 20 ms\n",
		rate, med(p50s), minf(p50s), maxf(p50s), med(p99s), minf(p99s), maxf(p99s), med(maxes))
	fmt.Printf("orderbench saturation: median %.0f orders/s (%.0f-%.0f) with %d callers\n", med(sat), minf(sat), maxf(sat), conc)
	return nil
}

// fixedRate sends orders at rate/s for d (open loop: a slow answer does not delay the
// next send) and returns the answered latencies and the error count.
func fixedRate(submit func(int) (time.Duration, error), rate int, d time.Duration) ([]time.Duration, int) {
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	var wg sync.WaitGroup
	start := time.Now()
	total := int(float64(rate) * d.Seconds())
	for i := range total {
		due := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := submit(i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			lat = append(lat, l)
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		lat = []time.Duration{0}
	}
	return lat, errs
}

// saturate runs conc callers back to back for d and returns the orders answered.
func saturate(submit func(int) (time.Duration, error), conc int, d time.Duration) (int64, int64) {
	var n, errs atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; time.Now().Before(end); i += conc {
				if _, err := submit(i); err != nil {
					errs.Add(1)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs.Load()
}

func pct(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
func ms(d time.Duration) float64                     { return float64(d) / float64(time.Millisecond) }

func med(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func minf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}
