// Command clusterbench measures a 3-node control plane: committed events/s and
// publish→commit latency, with every node fsyncing its raft log (the default).
//
// The nodes are real `crossdock server` processes of the built binary (node 1
// bootstraps, the others join with server tokens, as in docs/operations.md), so they do
// not share a Go runtime with the load generator. The load comes through the real path:
// agents (agent.New, in this process) publish 256-byte events into their Badger outbox
// (fsync) and stream them to the leader, which acknowledges each batch once a raft
// quorum committed it. A second figure comes from a direct uplink client that speaks
// the same stream from memory, without an outbox, to show what the cluster itself
// commits when the agents' CPU and disk are out of the way. Then it runs the peer
// (NATS JetStream, 3 replicas, fsync always) and prints the ratio.
//
//	make build && go run ./bench/clusterbench -bin bin/crossdock
//
// Latency is measured per publish call, from the start of Agent.Publish until the
// agent's uplink reports a committed seq at or past the call's last seq (the agent
// status the CLI shows, polled every 200µs): that is publish → outbox fsync → stream →
// raft commit on a quorum (leader and one follower fsynced) → applied on the leader →
// ack back to the agent.
//
// A run that commits nothing for -stall fails; its directory is kept with goroutine
// dumps of this process and of every node (SIGQUIT), for diagnosis.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/internal/demo/sample"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

const eventSize = 256

type options struct {
	bin          string
	nodes        int
	agents       int
	events       int
	runs         int
	batch        int
	inflight     int
	uplinkBatch  int
	rate         float64
	rateSeconds  float64
	rateBatch    int
	direct       bool
	streams      int
	window       int
	noQUIC       bool
	peer         string
	peerMsgs     int
	peerRate     float64
	keep         bool
	cpuprofile   string
	memprofile   string
	timeout      time.Duration
	stall        time.Duration
	viewsLag     bool
	viewsRounds  int
	scrapeRounds int
	scrape       time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/crossdock", "crossdock binary (make build)")
	flag.IntVar(&o.nodes, "nodes", 3, "control plane nodes")
	flag.IntVar(&o.agents, "agents", 4, "concurrent publishers: in-process agents")
	flag.IntVar(&o.events, "events", 200000, "events per max-throughput run (all agents together)")
	flag.IntVar(&o.runs, "runs", 3, "max-throughput runs; the median is reported")
	flag.IntVar(&o.batch, "publish-batch", 1000, "events per publish call in the max-throughput runs")
	flag.IntVar(&o.uplinkBatch, "uplink-batch", 0, "agents' uplink batch size in events (0: the agent's default)")
	flag.IntVar(&o.inflight, "inflight", 2, "per agent: publish calls awaiting commit before the publisher waits for one (0: no limit)")
	flag.Float64Var(&o.rate, "rate", 5000, "offered events/s for the fixed-rate latency phase (0 skips it)")
	flag.Float64Var(&o.rateSeconds, "rate-seconds", 10, "length of the fixed-rate phase")
	flag.IntVar(&o.rateBatch, "rate-batch", 50, "events per publish call in the fixed-rate phase")
	flag.BoolVar(&o.direct, "direct", true, "also measure with direct uplink streams (no agent outbox)")
	flag.IntVar(&o.streams, "direct-streams", 4, "direct uplink streams")
	flag.IntVar(&o.window, "direct-window", 8, "batches of 500 in flight per direct stream (the agent's default)")
	flag.BoolVar(&o.noQUIC, "no-quic", false, "agents and direct streams use HTTP/2 over TCP instead of HTTP/3")
	flag.StringVar(&o.peer, "peer", "../shared/bench/nats-peer.sh", "peer benchmark script ('' skips it)")
	flag.IntVar(&o.peerMsgs, "peer-msgs", 200000, "messages for the peer benchmark")
	flag.Float64Var(&o.peerRate, "peer-rate", 0, "use this peer msgs/s instead of running the script")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory and node logs")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process (the load generator) during the max runs")
	flag.StringVar(&o.memprofile, "memprofile", "", "write an allocation profile of this process (the load generator) after the max runs")
	flag.DurationVar(&o.timeout, "timeout", 6*time.Minute, "give up after this long")
	flag.DurationVar(&o.stall, "stall", 20*time.Second, "fail a run when nothing is committed for this long while events are outstanding")
	flag.BoolVar(&o.viewsLag, "views-lag", true, "after the runs, print each node's views lag behind its ledger (p50/p99 of apply → folded)")
	flag.IntVar(&o.viewsRounds, "views", 0, "compare views off and on: this many rounds, each a fresh cluster with --views=false then one with --views=true (order swapped every other round); the agents path only, -runs runs each, medians")
	flag.IntVar(&o.scrapeRounds, "scrape-compare", 0, "compare no scraper and a scraper every -scrape (1s when 0): this many rounds, each a fresh cluster without then one with (order swapped every other round); the agents path only, -runs runs each, medians")
	flag.DurationVar(&o.scrape, "scrape", 0, "fetch every node's /metrics this often during the whole run, as Prometheus would (0: no scraper)")
	flag.Parse()
	stallAfter = o.stall
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		os.Exit(1)
	}
}

func numCPU() int { return runtime.NumCPU() }

// writeAllocs writes the allocation profile (every allocation since the start, sampled).
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("write allocation profile: %w", err)
	}
	return f.Close()
}

// latencies collects durations; safe for concurrent use.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// summary returns "samples=N p50_ms=.. p99_ms=.. max_ms=..".
func (l *latencies) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return "samples=0"
	}
	s := append([]time.Duration(nil), l.d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) float64 {
		i := int(p * float64(len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return fmt.Sprintf("samples=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f", len(s), at(0.50), at(0.90), at(0.99), at(1))
}

func median(v []float64) (med, lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

// benchAgent is one in-process agent with a tracker of its publish calls awaiting
// commit.
type benchAgent struct {
	ag        *agent.Agent
	gen       *sample.Inventory
	committed atomic.Uint64

	mu      sync.Mutex
	pending []pend
	lat     *latencies
}

type pend struct {
	last uint64
	t0   time.Time
}

const pollEvery = 200 * time.Microsecond

// Progress watchdog: the time of the last commit any agent or direct stream saw.
var (
	stallAfter   = 20 * time.Second
	lastProgress atomic.Int64
)

func progressed() { lastProgress.Store(time.Now().UnixNano()) }

// errStalled marks a run that stopped committing.
var errStalled = errors.New("ingest stalled")

// stalled reports an error when nothing was committed for stallAfter.
func stalled() error {
	if d := time.Since(time.Unix(0, lastProgress.Load())); d > stallAfter {
		return fmt.Errorf("%w: nothing committed for %s while events are outstanding", errStalled, d.Round(100*time.Millisecond))
	}
	return nil
}

// watch polls the agent's committed seq (what `crossdock agent status` shows) and
// closes pending publish calls it covers.
func (b *benchAgent) watch(ctx context.Context) {
	for ctx.Err() == nil {
		c := b.ag.Status().GetCommittedSeq()
		if b.committed.Swap(c) != c {
			progressed()
		}
		now := time.Now()
		b.mu.Lock()
		for len(b.pending) > 0 && b.pending[0].last <= c {
			if b.lat != nil {
				b.lat.add(now.Sub(b.pending[0].t0))
			}
			b.pending = b.pending[1:]
		}
		b.mu.Unlock()
		time.Sleep(pollEvery)
	}
}

func (b *benchAgent) setSink(l *latencies) {
	b.mu.Lock()
	b.lat = l
	b.mu.Unlock()
}

// outstanding is how many publish calls await commit.
func (b *benchAgent) outstanding() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

func (b *benchAgent) publish(ctx context.Context, evs []*eventv1.Event) (uint64, error) {
	t0 := time.Now()
	res, err := b.ag.Publish(ctx, "bench", evs)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.pending = append(b.pending, pend{res.GetLastSeq(), t0})
	b.mu.Unlock()
	return res.GetLastSeq(), nil
}

func (b *benchAgent) events(n int) []*eventv1.Event {
	evs := make([]*eventv1.Event, n)
	for i := range evs {
		evs[i] = b.gen.Next()
		sample.Pad(evs[i], eventSize)
	}
	return evs
}

// waitCommitted waits until every agent's committed seq reaches its target.
func waitCommitted(ctx context.Context, agents []*benchAgent, target []uint64) error {
	for {
		done := true
		for i, a := range agents {
			if a.committed.Load() < target[i] {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		if err := stalled(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for commits: %w", ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// maxRun publishes n events as fast as the agents take them (each publisher keeps at
// most inflight calls awaiting commit) and returns committed events/s, from the first
// publish to the last ack.
func maxRun(ctx context.Context, agents []*benchAgent, n, batch, inflight int, lat *latencies) (float64, error) {
	per := n / len(agents)
	evs := make([][]*eventv1.Event, len(agents))
	for i, a := range agents {
		evs[i] = a.events(per)
		a.setSink(lat)
	}
	target := make([]uint64, len(agents))
	errc := make(chan error, len(agents))
	start := time.Now()
	progressed()
	for i, a := range agents {
		go func() {
			for j := 0; j < per; j += batch {
				for inflight > 0 && a.outstanding() >= inflight && ctx.Err() == nil {
					if err := stalled(); err != nil {
						errc <- err
						return
					}
					time.Sleep(pollEvery)
				}
				last, err := a.publish(ctx, evs[i][j:min(j+batch, per)])
				if err != nil {
					errc <- fmt.Errorf("publish: %w", err)
					return
				}
				target[i] = last
			}
			errc <- nil
		}()
	}
	for range agents {
		if err := <-errc; err != nil {
			return 0, err
		}
	}
	if err := waitCommitted(ctx, agents, target); err != nil {
		return 0, err
	}
	return float64(per*len(agents)) / time.Since(start).Seconds(), nil
}

// rateRun offers rate events/s in publish calls of batch events, spread evenly over
// the agents and over time, for seconds; it returns the committed events/s achieved
// and how many calls started late (the generator could not keep the schedule).
func rateRun(ctx context.Context, agents []*benchAgent, rate, seconds float64, batch int, lat *latencies) (float64, int, error) {
	na := len(agents)
	interval := time.Duration(float64(batch*na) / rate * float64(time.Second))
	calls := int(rate * seconds / float64(batch*na))
	evs := make([][]*eventv1.Event, na)
	for i, a := range agents {
		evs[i] = a.events(calls * batch)
		a.setSink(lat)
	}
	target := make([]uint64, na)
	var late atomic.Int64
	errc := make(chan error, na)
	start := time.Now()
	progressed()
	for i, a := range agents {
		go func() {
			offset := interval * time.Duration(i) / time.Duration(na)
			for k := range calls {
				at := start.Add(offset + time.Duration(k)*interval)
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				} else if -d > interval/2 {
					late.Add(1)
				}
				last, err := a.publish(ctx, evs[i][k*batch:(k+1)*batch])
				if err != nil {
					errc <- fmt.Errorf("publish: %w", err)
					return
				}
				target[i] = last
			}
			errc <- nil
		}()
	}
	for range agents {
		if err := <-errc; err != nil {
			return 0, 0, err
		}
	}
	if err := waitCommitted(ctx, agents, target); err != nil {
		return 0, 0, err
	}
	return float64(calls*batch*na) / time.Since(start).Seconds(), int(late.Load()), nil
}

func machine() string {
	model := "unknown"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("cpus=%d go=%s model=%q", numCPU(), runtime.Version(), model)
}

func run(o options) error {
	if o.agents <= 0 || o.events < o.agents || o.runs <= 0 || o.batch <= 0 {
		return errors.New("need -agents > 0, -events >= -agents, -runs > 0, -publish-batch > 0")
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (build it with make build)", err)
	}
	if o.viewsRounds > 0 {
		return viewsCompare(o, bin)
	}
	if o.scrapeRounds > 0 {
		return scrapeCompare(o, bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		return err
	}
	keep := o.keep
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	fmt.Printf("clusterbench machine %s nodes=%d event_bytes=%d fsync=every_node dir=%s\n", machine(), o.nodes, eventSize, dir)

	t0 := time.Now()
	c, err := startCluster(ctx, bin, dir, o.nodes)
	if err != nil {
		c.tailLogs()
		c.stop()
		return fmt.Errorf("form the cluster: %w", err)
	}
	stopScrape := startScraper(ctx, c, o.scrape)
	res, err := measure(ctx, o, c, time.Since(t0))
	stopScrape()
	if errors.Is(err, errStalled) {
		keep = true // dumpStall printed the logs and kept the evidence
	} else if err != nil {
		c.tailLogs()
	}
	c.stop()
	if err != nil {
		return err
	}

	peer := o.peerRate
	if peer == 0 && o.peer != "" {
		if _, err := os.Stat(o.peer); err != nil {
			fmt.Printf("clusterbench peer skipped: %v\n", err)
			o.peer = ""
		}
	}
	if peer == 0 && o.peer != "" {
		if peer, err = runPeer(ctx, o.peer, o.peerMsgs); err != nil {
			return fmt.Errorf("peer benchmark: %w", err)
		}
	}
	fmt.Printf("clusterbench summary agents_events_per_s=%.0f direct_events_per_s=%.0f\n", res.agents, res.direct)
	if peer > 0 {
		fmt.Printf("peer=jetstream-r3 msgs_per_s=%.0f\n", peer)
		fmt.Printf("ratio_vs_jetstream=%.2f\n", res.agents/peer)
		if res.direct > 0 {
			fmt.Printf("ratio_direct_vs_jetstream=%.2f\n", res.direct/peer)
		}
	}
	return nil
}

type results struct {
	agents, direct float64
	agentRuns      []float64
}

// viewsCompare runs o.viewsRounds rounds of a cluster with views off and one with
// views on (agents path, o.runs runs each, order swapped every other round, so drift
// of the shared machine falls on both), and prints the medians over all runs of each.
func viewsCompare(o options, bin string) error {
	o.direct, o.peer = false, ""
	runs := map[bool][]float64{}
	for r := range o.viewsRounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			rates, err := oneCluster(o, bin, 0, fmt.Sprintf("--views=%t", on))
			if err != nil {
				return fmt.Errorf("round %d views=%t: %w", r+1, on, err)
			}
			runs[on] = append(runs[on], rates...)
			fmt.Printf("clusterbench views_round=%d views=%t runs_events_per_s=%v\n", r+1, on, rounded(rates))
		}
	}
	offMed, offLo, offHi := median(runs[false])
	onMed, onLo, onHi := median(runs[true])
	fmt.Printf("clusterbench views=false runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", len(runs[false]), offMed, offLo, offHi)
	fmt.Printf("clusterbench views=true runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", len(runs[true]), onMed, onLo, onHi)
	fmt.Printf("clusterbench views_on_vs_off=%.3f\n", onMed/offMed)
	return nil
}

// scrapeCompare runs o.scrapeRounds rounds of a cluster without a scraper and one whose
// every node's /metrics is fetched every o.scrape (1s by default), as viewsCompare does
// for the views, and prints the medians and their ratio.
func scrapeCompare(o options, bin string) error {
	o.direct, o.peer = false, ""
	every := o.scrape
	if every <= 0 {
		every = time.Second
	}
	runs := map[bool][]float64{}
	for r := range o.scrapeRounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			var d time.Duration
			if on {
				d = every
			}
			rates, err := oneCluster(o, bin, d)
			if err != nil {
				return fmt.Errorf("round %d scrape=%t: %w", r+1, on, err)
			}
			runs[on] = append(runs[on], rates...)
			fmt.Printf("clusterbench scrape_round=%d scrape=%s runs_events_per_s=%v\n", r+1, d, rounded(rates))
		}
	}
	offMed, offLo, offHi := median(runs[false])
	onMed, onLo, onHi := median(runs[true])
	fmt.Printf("clusterbench scrape=none runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", len(runs[false]), offMed, offLo, offHi)
	fmt.Printf("clusterbench scrape=%s runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", every, len(runs[true]), onMed, onLo, onHi)
	fmt.Printf("clusterbench scraped_vs_not=%.3f\n", onMed/offMed)
	return nil
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}

// oneCluster forms a cluster with serverArgs, measures it (scraping every node's
// /metrics every scrape, 0: not) and stops it.
func oneCluster(o options, bin string, scrape time.Duration, serverArgs ...string) ([]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	c, err := startCluster(ctx, bin, dir, o.nodes, serverArgs...)
	if err != nil {
		c.tailLogs()
		c.stop()
		return nil, fmt.Errorf("form the cluster: %w", err)
	}
	stopScrape := startScraper(ctx, c, scrape)
	res, err := measure(ctx, o, c, time.Since(t0))
	stopScrape()
	if err != nil {
		c.tailLogs()
	}
	c.stop()
	return res.agentRuns, err
}

func measure(ctx context.Context, o options, c *cluster, formed time.Duration) (out results, err error) {
	leader, err := c.leader(ctx)
	if err != nil {
		return out, err
	}
	fmt.Printf("clusterbench cluster formed_s=%.1f leader=%s nodes=%s processes=separate\n", formed.Seconds(), leader.id, strings.Join(c.addrs(), ","))

	// Agents list every node, leader first as an operator would not know it: followers
	// redirect them anyway.
	servers := c.addrs()
	actx, acancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { acancel(); wg.Wait() }()
	logFile, err := os.Create(filepath.Join(c.dir, "agents.log"))
	if err != nil {
		return out, err
	}
	defer logFile.Close()
	agentLog := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Runs before the agents are stopped (deferred later), so their uplinks are in the dump.
	defer func() {
		if errors.Is(err, errStalled) {
			dumpStall(c.dir, c)
		}
	}()
	agents := make([]*benchAgent, o.agents)
	for i := range agents {
		name := fmt.Sprintf("bench-%d", i+1)
		// Retried: on a busy machine a new cluster may still hold an election.
		var tok *connect.Response[adminv1.CreateTokenResponse]
		var tokErr error
		if err := poll(30*time.Second, "an agent token", func() bool {
			tok, tokErr = c.admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(5 * time.Minute), AgentName: name}))
			return tokErr == nil
		}); err != nil {
			return out, fmt.Errorf("agent token: %w: %v", err, tokErr)
		}
		ag, err := agent.New(ctx, agent.Config{DataDir: filepath.Join(c.dir, name), Servers: servers, EnrollToken: tok.Msg.GetToken(),
			LocalAddr: "-", DisableQUIC: o.noQUIC, QuotaBytes: 2 << 30, Logger: agentLog, BatchMaxEvents: o.uplinkBatch})
		if err != nil {
			return out, err
		}
		a := &benchAgent{ag: ag, gen: sample.NewInventory(uint64(i+1), sample.DefaultWarehouses, 2000, time.Now())}
		agents[i] = a
		wg.Add(2)
		go func() { defer wg.Done(); _ = ag.Run(actx) }()
		go func() { defer wg.Done(); a.watch(actx) }()
	}
	var transports []string
	for _, a := range agents {
		if err := poll(30*time.Second, "agent connected", func() bool { return a.ag.Status().GetUplinkState() == "connected" }); err != nil {
			return out, err
		}
		transports = append(transports, a.ag.Status().GetTransport())
	}
	fmt.Printf("clusterbench agents=%d transport=%s publish_batch=%d inflight_per_agent=%d\n", o.agents, strings.Join(transports, ","), o.batch, o.inflight)

	// Warm up: connections, Badger, raft pipelines.
	if _, err := maxRun(ctx, agents, max(o.events/10, o.agents*o.batch), o.batch, o.inflight, nil); err != nil {
		return out, fmt.Errorf("warm-up: %w", err)
	}

	if o.rate > 0 {
		lat := &latencies{}
		m := c.meter(leader.id)
		got, late, err := rateRun(ctx, agents, o.rate, o.rateSeconds, o.rateBatch, lat)
		if err != nil {
			return out, fmt.Errorf("fixed-rate phase: %w", err)
		}
		fmt.Printf("clusterbench latency path=agents load=fixed offered_events_per_s=%.0f committed_events_per_s=%.0f publish_batch=%d late_calls=%d %s %s\n",
			o.rate, got, o.rateBatch, late, lat.summary(), m.report(int(o.rate*o.rateSeconds)))
	}

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return out, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return out, err
		}
		defer pprof.StopCPUProfile()
	}
	var rates []float64
	maxLat := &latencies{}
	for r := range o.runs {
		m := c.meter(leader.id)
		rate, err := maxRun(ctx, agents, o.events, o.batch, o.inflight, maxLat)
		if err != nil {
			return out, fmt.Errorf("run %d: %w", r+1, err)
		}
		rates = append(rates, rate)
		fmt.Printf("clusterbench run=%d path=agents events=%d events_per_s=%.0f %s\n", r+1, o.events, rate, m.report(o.events))
	}
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if o.memprofile != "" {
		if err := writeAllocs(o.memprofile); err != nil {
			return out, err
		}
	}
	med, lo, hi := median(rates)
	out.agents = med
	out.agentRuns = rates
	fmt.Printf("clusterbench max path=agents agents=%d publish_batch=%d runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", o.agents, o.batch, o.runs, med, lo, hi)
	fmt.Printf("clusterbench latency path=agents load=max publish_batch=%d inflight_per_agent=%d %s\n", o.batch, o.inflight, maxLat.summary())
	acancel()
	wg.Wait()

	if o.direct {
		if out.direct, err = directRuns(ctx, o, c, leader); err != nil {
			return out, err
		}
	}

	var seqs []uint64
	converged := poll(30*time.Second, "followers to converge", func() bool {
		seqs = c.lastSeqs(ctx)
		for _, s := range seqs {
			if s != seqs[0] || s == 0 {
				return false
			}
		}
		return true
	}) == nil
	fmt.Printf("clusterbench converged=%t last_seq_per_node=%v\n", converged, seqs)
	if o.viewsLag {
		c.viewsStatus(ctx)
	}
	return out, nil
}

func directRuns(ctx context.Context, o options, c *cluster, leader *node) (float64, error) {
	clients := make([]*directClient, o.streams)
	for i := range clients {
		d, err := newDirectClient(ctx, c, leader.api, fmt.Sprintf("direct-%d", i+1), uint64(100+i), o.noQUIC)
		if err != nil {
			return 0, err
		}
		defer d.close()
		clients[i] = d
	}
	const batch = 500 // the agent's uplink batch
	once := func(n int, lat *latencies) (float64, error) {
		per := n / len(clients)
		sessions := make([]*directSession, len(clients))
		for i, d := range clients {
			s, err := d.open(ctx, per, batch)
			if err != nil {
				return 0, fmt.Errorf("direct stream: %w", err)
			}
			sessions[i] = s
		}
		errc := make(chan error, len(sessions))
		start := time.Now()
		for _, s := range sessions {
			go func() { errc <- s.run(o.window, lat) }()
		}
		for range sessions {
			if err := <-errc; err != nil {
				return 0, fmt.Errorf("direct stream: %w", err)
			}
		}
		return float64(per*len(clients)) / time.Since(start).Seconds(), nil
	}
	if _, err := once(max(o.events/10, o.streams*batch), &latencies{}); err != nil {
		return 0, err
	}
	var rates []float64
	lat := &latencies{}
	for r := range o.runs {
		m := c.meter(leader.id)
		rate, err := once(o.events, lat)
		if err != nil {
			return 0, err
		}
		rates = append(rates, rate)
		fmt.Printf("clusterbench run=%d path=direct events=%d events_per_s=%.0f %s\n", r+1, o.events, rate, m.report(o.events))
	}
	med, lo, hi := median(rates)
	fmt.Printf("clusterbench max path=direct streams=%d batch=%d window=%d runs=%d median_events_per_s=%.0f min=%.0f max=%.0f\n", o.streams, batch, o.window, o.runs, med, lo, hi)
	fmt.Printf("clusterbench latency path=direct load=max unit=batch_send_to_ack %s\n", lat.summary())
	return med, nil
}

// dumpStall keeps the evidence of a stalled run: this process's goroutines (the agents'
// uplinks) in loadgen-goroutines.txt and, through SIGQUIT, every node's goroutines at
// the end of its log.
func dumpStall(dir string, c *cluster) {
	c.tailLogs()
	if f, err := os.Create(filepath.Join(dir, "loadgen-goroutines.txt")); err == nil {
		_ = pprof.Lookup("goroutine").WriteTo(f, 2)
		f.Close()
	}
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Signal(syscall.SIGQUIT)
		}
	}
	time.Sleep(time.Second)
	fmt.Fprintf(os.Stderr, "clusterbench: stalled run kept in %s: loadgen-goroutines.txt, agents.log, and goroutine dumps at the end of cp*.log\n", dir)
}

// runPeer runs the peer script and returns its msgs/s.
func runPeer(ctx context.Context, script string, msgs int) (float64, error) {
	cmd := exec.CommandContext(ctx, "bash", script, "--msgs", strconv.Itoa(msgs), "--size", strconv.Itoa(eventSize))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return 0, err
	}
	for _, f := range strings.Fields(stdout.String()) {
		if v, ok := strings.CutPrefix(f, "msgs_per_s="); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no msgs_per_s in %q", stdout.String())
}
