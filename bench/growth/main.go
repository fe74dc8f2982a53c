// Command growth measures how the costs that depend on the ledger's size grow: at each
// ledger size (cumulative, one cluster) it takes a snapshot with `crossdock snapshot
// save` (size and time) and what it holds by key prefix (`crossdock snapshot inspect`), joins a fresh node to the cluster and times until it holds
// every event the leader held when it joined, with ingest running (events/s committed
// in the 10 s before the join and during it), then removes that node again, and
// restarts a follower and times until its API answers and until it has caught up.
// The join is timed until the leader lists the node as a voter: it promotes itself once
// it has applied the log up to the index it was added at.
//
// The nodes are real `crossdock server` processes of the built binary; the load comes
// over the uplink stream like agents send it (256-byte events).
//
//	make build && go run ./bench/growth -bin bin/crossdock -sizes 1M,4M,16M
//
// -retention FILE applies that Retention document (`crossdock apply -f FILE`) before
// loading, for the "with retention" column: run it once without and once with.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/bench/internal/benchkit"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

type options struct {
	bin, retention string
	sizes          []int
	nodes, agents  int
	batch, window  int
	ingestBatch    int
	rate           float64
	loadRate       float64
	before         time.Duration
	serverFlags    []string
	keep           bool
}

func main() {
	var o options
	var sizes, serverFlags string
	flag.StringVar(&o.bin, "bin", "bin/crossdock", "crossdock binary")
	flag.StringVar(&sizes, "sizes", "1M,4M,16M", "ledger sizes at which to measure, in events (K and M suffixes)")
	flag.StringVar(&o.retention, "retention", "", "Retention document applied with `crossdock apply -f` before loading (none when empty)")
	flag.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster before the join (the joining node is one more; with 2, restarting the follower also measures an election)")
	flag.IntVar(&o.agents, "agents", 2, "concurrent uplink streams while loading")
	flag.IntVar(&o.batch, "batch", 5000, "events per uplink batch while loading (one raft entry each)")
	flag.IntVar(&o.ingestBatch, "ingest-batch", 500, "events per uplink batch of the ingest that runs across the join")
	flag.IntVar(&o.window, "window", 2, "batches in flight per stream")
	flag.Float64Var(&o.rate, "rate", 0, "events/s offered by the ingest that runs across the join (0: as fast as acknowledged)")
	flag.Float64Var(&o.loadRate, "load-rate", 0, "events/s offered while loading to each size, over all streams (0: as fast as acknowledged); with -retention, a rate the cluster's pruning keeps up with makes the ledger hold what retention keeps, not what the load outran")
	flag.DurationVar(&o.before, "before", 10*time.Second, "how long ingest is measured before the join")
	flag.StringVar(&serverFlags, "server-flags", "--raft-snapshot-threshold 100 --raft-trailing-logs 50 --raft-snapshot-interval 30s --raft-snapshot-rate 0",
		"extra flags for crossdock server, space separated; the default makes raft snapshot and truncate its log while loading, so the joining node receives the ledger as a snapshot, as it would in a cluster that has run for a while, and takes those snapshots at full speed (not --raft-snapshot-rate's default), so the one it receives holds about the size measured")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory")
	flag.Parse()
	var err error
	if o.sizes, err = benchkit.ParseSizes(sizes); err != nil {
		fmt.Fprintln(os.Stderr, "growth:", err)
		os.Exit(2)
	}
	o.serverFlags = strings.Fields(serverFlags)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "growth:", err)
		os.Exit(1)
	}
}

type row struct {
	events                   int
	snapBytes                int64
	snapTime                 time.Duration
	join                     time.Duration
	rateBefore, rateDuring   float64
	restartAPI, restartReady time.Duration
	leaderDisk               int64
	sections                 map[string]section // by key prefix, from snapshot inspect
}

// section is one key prefix of `crossdock snapshot inspect -o json`.
type section struct {
	Prefix  string `json:"prefix"`
	Name    string `json:"name"`
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "growth-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("data in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	c, err := benchkit.Start(ctx, o.bin, dir, o.nodes, o.serverFlags...)
	defer c.Stop()
	if err != nil {
		c.TailLogs(os.Stderr)
		return err
	}
	column := "without retention"
	if o.retention != "" {
		// The retention path: the Retention document is applied like any other
		// document, before any event is committed.
		if out, err := cli(c, "apply", "-f", o.retention); err != nil {
			return fmt.Errorf("apply %s: %w\n%s", o.retention, err, out)
		}
		column = "with retention (" + filepath.Base(o.retention) + ")"
	}
	loadRate := "as fast as acknowledged"
	if o.loadRate > 0 {
		loadRate = fmt.Sprintf("%.0f events/s", o.loadRate)
	}
	fmt.Printf("growth: %d nodes + 1 joining, %d-byte events, %s, loaded %s; server flags %q\n", o.nodes, benchkit.EventSize, column, loadRate, strings.Join(o.serverFlags, " "))
	var rows []row
	loaded, agents := 0, 0
	for _, size := range o.sizes {
		t0 := time.Now()
		if err := load(ctx, c, size-loaded, o, &agents); err != nil {
			c.TailLogs(os.Stderr)
			return fmt.Errorf("load to %s: %w", benchkit.SizeLabel(size), err)
		}
		fmt.Printf("%s: loaded in %.0f s\n", benchkit.SizeLabel(size), time.Since(t0).Seconds())
		loaded = size
		r := row{events: size}
		if err := measure(ctx, c, o, &r, &agents); err != nil {
			c.TailLogs(os.Stderr)
			return fmt.Errorf("at %s: %w", benchkit.SizeLabel(size), err)
		}
		rows = append(rows, r)
		fmt.Printf("%s: snapshot %.0f MiB in %.1f s; join %.1f s (ingest %.0f ev/s before, %.0f during); restart: API in %.1f s, caught up in %.1f s; leader data dir %.0f MiB\n",
			benchkit.SizeLabel(size), mib(r.snapBytes), r.snapTime.Seconds(), r.join.Seconds(), r.rateBefore, r.rateDuring, r.restartAPI.Seconds(), r.restartReady.Seconds(), mib(r.leaderDisk))
	}
	fmt.Println()
	fmt.Printf("%s\n\n", column)
	fmt.Println("| events | snapshot MiB | snapshot s | join s | ingest ev/s before join | ingest ev/s during join | restart: API s | restart: caught up s | leader data dir MiB |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.1f | %.1f | %.0f | %.0f | %.1f | %.1f | %.0f |\n", benchkit.SizeLabel(r.events), mib(r.snapBytes), r.snapTime.Seconds(), r.join.Seconds(), r.rateBefore, r.rateDuring, r.restartAPI.Seconds(), r.restartReady.Seconds(), mib(r.leaderDisk))
	}
	printSections(rows)
	if len(rows) >= 2 {
		a, b := rows[0], rows[len(rows)-1]
		x := float64(b.events) / float64(a.events)
		fmt.Printf("ratio %s/%s (ledger ×%.0f): snapshot size ×%.1f, snapshot time ×%.1f, join ×%.1f, restart caught up ×%.1f\n",
			benchkit.SizeLabel(b.events), benchkit.SizeLabel(a.events), x, float64(b.snapBytes)/float64(a.snapBytes), b.snapTime.Seconds()/a.snapTime.Seconds(),
			b.join.Seconds()/a.join.Seconds(), b.restartReady.Seconds()/max(a.restartReady.Seconds(), 0.001))
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// printSections prints what each snapshot held, by key prefix (records and MiB before
// compression), the prefixes with the most bytes in the last snapshot first.
func printSections(rows []row) {
	if len(rows) == 0 {
		return
	}
	var prefixes []string
	for _, r := range rows {
		for p := range r.sections {
			if !slices.Contains(prefixes, p) {
				prefixes = append(prefixes, p)
			}
		}
	}
	last := rows[len(rows)-1].sections
	slices.SortFunc(prefixes, func(a, b string) int {
		if c := cmp.Compare(last[b].Bytes, last[a].Bytes); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	fmt.Println()
	fmt.Println("snapshot contents by key prefix (records / MiB before compression)")
	fmt.Println()
	head, rule := "| prefix | holds |", "| --- | --- |"
	for _, r := range rows {
		head += " " + benchkit.SizeLabel(r.events) + " |"
		rule += " --- |"
	}
	fmt.Println(head)
	fmt.Println(rule)
	for _, p := range prefixes {
		name := ""
		for _, r := range rows {
			if s, ok := r.sections[p]; ok && s.Name != "" {
				name = s.Name
			}
		}
		line := fmt.Sprintf("| `%q` | %s |", p, name)
		for _, r := range rows {
			s := r.sections[p]
			line += fmt.Sprintf(" %d / %.1f |", s.Records, float64(s.Bytes)/(1<<20))
		}
		fmt.Println(line)
	}
	fmt.Println()
}

// cli runs the crossdock CLI with node 1's admin config.
func cli(c *benchkit.Cluster, args ...string) ([]byte, error) {
	cmd := exec.Command(c.Bin, append([]string{"--config", filepath.Join(c.Nodes[0].Dir, "admin.yaml")}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+c.Dir)
	return cmd.CombinedOutput()
}

func measure(ctx context.Context, c *benchkit.Cluster, o options, r *row, agents *int) error {
	var leader *benchkit.Node
	var err error
	if perr := benchkit.Poll(ctx, 100*time.Millisecond, 2*time.Minute, "a leader", func() bool { leader, err = c.Leader(ctx); return err == nil }); perr != nil {
		return fmt.Errorf("%w: %v", perr, err)
	}
	r.leaderDisk = benchkit.DirBytes(leader.Dir)

	// Snapshot: what a backup, and a raft snapshot sent to a new node, costs.
	snap := filepath.Join(c.Dir, "growth.snap")
	t0 := time.Now()
	if out, err := cli(c, "snapshot", "save", snap); err != nil {
		return fmt.Errorf("snapshot save: %w\n%s", err, out)
	}
	r.snapTime = time.Since(t0)
	st, err := os.Stat(snap)
	if err != nil {
		return err
	}
	r.snapBytes = st.Size()
	out, err := cli(c, "-o", "json", "snapshot", "inspect", snap)
	if err != nil {
		return fmt.Errorf("snapshot inspect: %w\n%s", err, out)
	}
	var ins struct {
		Sections []section `json:"sections"`
	}
	if err := json.Unmarshal(out, &ins); err != nil {
		return fmt.Errorf("snapshot inspect: %w\n%s", err, out)
	}
	r.sections = map[string]section{}
	for _, s := range ins.Sections {
		r.sections[s.Prefix] = s
	}
	_ = os.Remove(snap)

	// Join with ingest running: the rate before, then during the join.
	*agents++
	l, err := benchkit.NewLoaderRetry(ctx, c, fmt.Sprintf("join-load-%d", *agents), uint64(1000+*agents), 2*time.Minute)
	if err != nil {
		return err
	}
	defer l.Close()
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.RunResilient(lctx, c, o.ingestBatch, o.window, o.rate, func(err error) {
			fmt.Printf("  ingest stream interrupted (reconnecting to the leader): %v\n", err)
		})
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			select {
			case <-loadDone:
			case <-time.After(15 * time.Second):
				fmt.Println("  the ingest stream did not end 15 s after it was cancelled; going on without it")
			}
		}
	}
	defer stop()
	// Let the stream start before the window opens.
	if err := benchkit.Poll(ctx, 100*time.Millisecond, 30*time.Second, "ingest to start", func() bool { return l.Committed.Load() > 0 }); err != nil {
		return err
	}
	c0 := l.Committed.Load()
	t0 = time.Now()
	select {
	case <-time.After(o.before):
	case <-ctx.Done():
		return ctx.Err()
	}
	r.rateBefore = float64(l.Committed.Load()-c0) / time.Since(t0).Seconds()
	fmt.Printf("  ingest before the join: %.0f ev/s; joining\n", r.rateBefore)

	c0, t0 = l.Committed.Load(), time.Now()
	nd, err := c.Join(ctx)
	if err != nil {
		return err
	}
	// Joined: promoted to voter, which the node asks for once it has applied the log
	// up to the index it was added at (snapshot installed, log after it replayed).
	if err := benchkit.Poll(ctx, 100*time.Millisecond, 30*time.Minute, "the joining node to catch up and be promoted", func() bool {
		return c.Promoted(ctx, nd.ID)
	}); err != nil {
		return err
	}
	r.join = time.Since(t0)
	r.rateDuring = float64(l.Committed.Load()-c0) / r.join.Seconds()
	fmt.Printf("  joined in %.1f s, ingest during the join: %.0f ev/s\n", r.join.Seconds(), r.rateDuring)
	stop()
	// Remove the joined node so every size joins into the same cluster.
	if _, err := c.Admin.RemovePeer(ctx, connect.NewRequest(&adminv1.RemovePeerRequest{Id: nd.ID})); err != nil {
		return fmt.Errorf("remove %s: %w", nd.ID, err)
	}
	nd.Stop()
	c.Nodes = slices.DeleteFunc(c.Nodes, func(n *benchkit.Node) bool { return n == nd })
	// Its copy of the ledger is not needed again: at 16M events each size's joiner kept
	// gigabytes, and the run filled this machine's disk (docs/performance.md).
	if err := os.RemoveAll(nd.Dir); err != nil {
		return fmt.Errorf("remove %s's data: %w", nd.ID, err)
	}

	// Restart a follower: time until its API answers, and until it holds what the
	// leader held when it stopped.
	var follower *benchkit.Node
	for _, n := range c.Nodes {
		if n.ID != leader.ID {
			follower = n
			break
		}
	}
	if follower == nil {
		return nil // one node: restarting it would measure an election too
	}
	st1, err := c.Status(ctx)
	if err != nil {
		return err
	}
	target := st1.GetLastSeq()
	follower.Stop()
	t0 = time.Now()
	if err := c.Restart(follower); err != nil {
		return err
	}
	var seq uint64
	if err := benchkit.Poll(ctx, 100*time.Millisecond, 30*time.Minute, "the restarted node's API", func() bool {
		seq, _, err = follower.NodeStatus(ctx)
		return err == nil
	}); err != nil {
		return err
	}
	r.restartAPI = time.Since(t0)
	if err := benchkit.Poll(ctx, 100*time.Millisecond, 30*time.Minute, "the restarted node to catch up", func() bool {
		seq, _, err = follower.NodeStatus(ctx)
		return err == nil && seq >= target
	}); err != nil {
		return err
	}
	r.restartReady = time.Since(t0)
	return benchkit.Poll(ctx, 100*time.Millisecond, 2*time.Minute, "a leader after the restart", func() bool { return c.Voters(ctx) == len(c.Nodes) })
}

// load commits n more events through o.agents concurrent streams (fresh agents).
func load(ctx context.Context, c *benchkit.Cluster, n int, o options, agents *int) error {
	if n <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, o.agents)
	for i := range o.agents {
		*agents++
		l, err := benchkit.NewLoaderRetry(ctx, c, fmt.Sprintf("load-%d", *agents), uint64(*agents), 2*time.Minute)
		if err != nil {
			return err
		}
		share := n / o.agents
		if i == 0 {
			share += n % o.agents
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.Close()
			errs[i] = l.RunN(ctx, c, share, o.batch, o.window, o.loadRate/float64(o.agents))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
