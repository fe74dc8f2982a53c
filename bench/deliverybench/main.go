// Command deliverybench measures the delivery engine on a one-node control plane, in one
// process on loopback:
//
//   - throughput: events/s from the ledger to a local webhook receiver (the sample
//     marketplace, which verifies every signature), with one message per request and
//     with batches of 100;
//   - latency: publish at an in-process agent → webhook received, at a steady rate
//     (1,000 events/s by default), p50 and p99.
//
// Each figure is the median over -runs runs.
//
//	go run ./bench/deliverybench -events 20000 -rate 1000 -seconds 10 -runs 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() {
	events := flag.Int("events", 20000, "events per throughput run")
	rate := flag.Int("rate", 1000, "events/s published in the latency run")
	seconds := flag.Int("seconds", 10, "length of a latency run")
	runs := flag.Int("runs", 3, "runs per figure; the median is reported")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "deliverybench:", err)
		os.Exit(1)
	}
	for _, batch := range []int{1, 100} {
		var rates []float64
		for range *runs {
			r, err := throughput(*events, batch)
			if err != nil {
				fail(err)
			}
			rates = append(rates, r)
		}
		slices.Sort(rates)
		fmt.Printf("delivery throughput batch=%d events=%d runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n",
			batch, *events, *runs, rates[len(rates)/2], rates[0], rates[len(rates)-1])
	}
	var p50s, p99s, maxs, e50s, e99s []time.Duration
	for range *runs {
		l, err := latency(*rate, *seconds)
		if err != nil {
			fail(err)
		}
		p50s, p99s, maxs = append(p50s, l.p50), append(p99s, l.p99), append(maxs, l.max)
		e50s, e99s = append(e50s, l.enginep50), append(e99s, l.enginep99)
	}
	med := func(d []time.Duration) float64 { slices.Sort(d); return ms(d[len(d)/2]) }
	fmt.Printf("delivery latency publish->webhook rate=%d/s seconds=%d runs=%d median_p50_ms=%.1f median_p99_ms=%.1f p99_range_ms=%.1f-%.1f median_max_ms=%.1f\n",
		*rate, *seconds, *runs, med(p50s), med(p99s), ms(p99s[0]), ms(p99s[len(p99s)-1]), med(maxs))
	fmt.Printf("delivery latency commit->webhook (engine) rate=%d/s median_p50_ms=%.1f median_p99_ms=%.1f\n", *rate, med(e50s), med(e99s))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// node is a one-node control plane in a temp dir.
type node struct {
	srv  *controlplane.Server
	dir  string
	stop func()
}

func startNode() (*node, error) {
	dir, err := os.MkdirTemp("", "deliverybench-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := controlplane.New(ctx, controlplane.Config{NodeID: "bench", DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true, DisableHTTP3: false})
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	return &node{srv: srv, dir: dir, stop: func() { cancel(); <-done; os.RemoveAll(dir) }}, nil
}

// payload is what the bench route sends; the receiver reads sku and quantity, and the
// bench its publish time.
type payload struct {
	SKU       string `json:"sku"`
	Quantity  string `json:"quantity"`
	Published int64  `json:"published_unix_nano"`
	Committed int64  `json:"committed_unix_nano"`
}

var route = delivery.Route{Name: "bench", Destinations: []string{"market"}, Evaluate: func(ce *eventv1.CommittedEvent) (bool, []byte, error) {
	lvl := ce.GetEvent().GetInventoryLevel()
	b, err := json.Marshal(payload{SKU: lvl.GetSku(), Quantity: lvl.GetAvailable(), Published: ce.GetEvent().GetOccurredAt().AsTime().UnixNano(), Committed: ce.GetCommittedAt().AsTime().UnixNano()})
	return true, b, err
}}

func level(i int, at time.Time) *eventv1.Event {
	sku := fmt.Sprintf("SKU-%04d", i%500)
	return &eventv1.Event{
		Type: "inventory.level", Keys: map[string]string{"sku": sku}, OccurredAt: timestamppb.New(at),
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: fmt.Sprint(i), Available: fmt.Sprint(i)}},
	}
}

// throughput commits n events, then times the engine from start until its cursor passes
// them all.
func throughput(n, batch int) (float64, error) {
	nd, err := startNode()
	if err != nil {
		return 0, err
	}
	defer nd.stop()
	st := nd.srv.Store()
	ctx := context.Background()
	now := time.Now()
	for i := 0; i < n; i += 1000 {
		b := &storev1.IngestBatch{AgentId: "bench"}
		for j := i; j < min(i+1000, n); j++ {
			ev := level(j, now)
			ev.Id = fmt.Sprintf("ev_bench_%08d", j)
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(j + 1), Event: ev})
		}
		if _, err := st.Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
			return 0, fmt.Errorf("ingest: %w", err)
		}
	}
	m, err := samplemarket.New(samplemarket.Config{Secret: secret})
	if err != nil {
		return 0, err
	}
	recv := httptest.NewServer(m)
	defer recv.Close()
	dest := delivery.Destination{Name: "market", Kind: delivery.KindWebhook, URL: recv.URL, Secret: secret}
	if batch > 1 {
		// BatchMaxWait as the engine's own default was before the one policy model
		// (20ms, not the documents' 1s), so figures stay comparable across versions.
		dest.AcceptsBatches, dest.Policy.BatchMaxEvents, dest.Policy.BatchMaxWait = true, batch, 20*time.Millisecond
	}
	e := delivery.New(delivery.Config{Store: st, Plans: delivery.StaticPlan{P: &delivery.Plan{Version: "1", Destinations: []delivery.Destination{dest}, Routes: []delivery.Route{route}}}, Poll: 10 * time.Millisecond, AddressPolicy: loopbackOnly()})
	ectx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); _ = e.Run(ectx) }()
	defer func() { cancel(); <-done }()
	l := st.Ledger()
	deadline := start.Add(10 * time.Minute)
	for {
		c, ok, err := l.DeliveryCursor("market")
		if err != nil {
			return 0, err
		}
		if ok && c.GetSeq() > uint64(n) {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("cursor %d of %d after 10 minutes", c.GetSeq(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// latencies are one latency run's percentiles: publish → webhook received, and the
// engine's part, raft commit (the leader's append time) → webhook received.
type latencies struct{ p50, p99, max, enginep50, enginep99 time.Duration }

// latency publishes at rate events/s for the given seconds through an in-process agent.
func latency(rate, seconds int) (latencies, error) {
	nd, err := startNode()
	if err != nil {
		return latencies{}, err
	}
	defer nd.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var lat, engine []time.Duration
	m, err := samplemarket.New(samplemarket.Config{Secret: secret})
	if err != nil {
		return latencies{}, err
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		m.ServeHTTP(rec, r)
		at := time.Now()
		if rec.status != http.StatusOK {
			return
		}
		reqs := m.Requests()
		last := reqs[len(reqs)-1]
		for _, msg := range last.Messages {
			var p payload
			if json.Unmarshal(msg.Raw, &p) == nil {
				mu.Lock()
				lat = append(lat, at.Sub(time.Unix(0, p.Published)))
				engine = append(engine, at.Sub(time.Unix(0, p.Committed)))
				mu.Unlock()
			}
		}
	}))
	defer recv.Close()
	st := nd.srv.Store()
	dest := delivery.Destination{Name: "market", Kind: delivery.KindWebhook, URL: recv.URL, Secret: secret}
	e := delivery.New(delivery.Config{Store: st, Plans: delivery.StaticPlan{P: &delivery.Plan{Version: "1", Destinations: []delivery.Destination{dest}, Routes: []delivery.Route{route}}}, Poll: 10 * time.Millisecond, AddressPolicy: loopbackOnly()})
	edone := make(chan struct{})
	go func() { defer close(edone); _ = e.Run(ctx) }()
	defer func() { cancel(); <-edone }()

	cc, err := cliconfig.Load(nd.srv.AdminConfigPath())
	if err != nil {
		return latencies{}, err
	}
	admin, closeAdmin, err := cc.AdminClient()
	if err != nil {
		return latencies{}, err
	}
	defer closeAdmin()
	tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(time.Minute), AgentName: "bench"}))
	if err != nil {
		return latencies{}, err
	}
	ag, err := agent.New(ctx, agent.Config{DataDir: filepath.Join(nd.dir, "agent"), Servers: []string{nd.srv.Addr()}, EnrollToken: tok.Msg.GetToken(), LocalAddr: "-"})
	if err != nil {
		return latencies{}, err
	}
	actx, acancel := context.WithCancel(ctx)
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(actx) }()
	defer func() { acancel(); <-agDone }()

	// Ticks of 10 ms, each publishing rate/100 events stamped with the publish time.
	per := max(rate/100, 1)
	total := per * 100 * seconds
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < total; i += per {
		<-tick.C
		now := time.Now()
		evs := make([]*eventv1.Event, per)
		for j := range evs {
			evs[j] = level(i+j, now)
		}
		if _, err := ag.Publish(ctx, "bench", evs); err != nil {
			return latencies{}, fmt.Errorf("publish: %w", err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= total {
			break
		}
		if time.Now().After(deadline) {
			return latencies{}, fmt.Errorf("only %d of %d events received", n, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	slices.Sort(engine)
	return latencies{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], max: lat[len(lat)-1],
		enginep50: engine[len(engine)/2], enginep99: engine[len(engine)*99/100]}, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// loopbackOnly lets webhooks reach the benchmark's receivers, httptest servers on
// loopback (the engine allows only public addresses by default).
func loopbackOnly() *delivery.AddressPolicy {
	p, err := delivery.NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	if err != nil {
		panic(err) // a constant prefix
	}
	return p
}
