// Command soak runs a 3-node control plane (real `crossdock server` processes of the
// built binary) under steady ingest for a while and samples, every interval, each
// node's data dir disk usage (the archive, <data-dir>/archive, apart: it grows by
// design), resident anonymous memory (RssAnon), the live Go heap (HeapAlloc right after
// a garbage collection the sample asks for: what RssAnon holds that is in use; the
// collector lets RssAnon grow to about twice it between collections), the age of the
// earliest event held and the bytes of the segment files (all, and held by the log),
// and the p99 publish→commit latency of the load generator's batches (send → acknowledgement
// carrying a committed seq at or past the batch's last event). It prints the series and
// the least-squares slope of each over the samples after -settle (the first retention
// period: until then the ledger only grows), so flat means a slope near zero.
//
//	make build && go run ./bench/soak -bin bin/crossdock -minutes 30 -rate 5000 -retention retention.yaml
//
// -retention FILE applies that Retention document (`crossdock apply -f FILE`) before the
// load starts; with -retention ” nothing is pruned and disk grows with the ledger.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/crossdock/crossdock/bench/internal/benchkit"
)

type options struct {
	bin, retention string
	minutes        float64
	rate           float64
	nodes          int
	batch, window  int
	interval       time.Duration
	settle         time.Duration
	serverFlags    []string
	keep           bool
}

func main() {
	var o options
	var serverFlags string
	flag.StringVar(&o.bin, "bin", "bin/crossdock", "crossdock binary")
	flag.Float64Var(&o.minutes, "minutes", 30, "how long the load runs")
	flag.Float64Var(&o.rate, "rate", 5000, "events/s offered")
	flag.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster")
	flag.IntVar(&o.batch, "batch", 100, "events per uplink batch")
	flag.IntVar(&o.window, "window", 8, "batches in flight")
	flag.DurationVar(&o.interval, "interval", time.Minute, "sampling interval")
	flag.DurationVar(&o.settle, "settle", 5*time.Minute, "samples before this (the first retention period) are left out of the slopes")
	flag.StringVar(&o.retention, "retention", "", "Retention document applied with `crossdock apply -f` before the load (none when empty)")
	flag.StringVar(&serverFlags, "server-flags", "", "extra flags for crossdock server, space separated")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory")
	flag.Parse()
	o.serverFlags = strings.Fields(serverFlags)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type sample struct {
	at        time.Duration // since the load started
	committed int64
	p99       time.Duration
	disk      []int64   // per node: its data dir without the archive
	archive   []int64   // per node: <data-dir>/archive, which grows by design
	rss       []float64 // per node, MiB
	live      []float64 // per node: the live heap after a collection, MiB
	// Per node, from its /metrics: the age of the earliest event held (seconds; how
	// far behind its retention pruning runs) and its segment files, all and held (MiB).
	age, segAll, segHeld []float64
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "soak-")
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
	if o.retention != "" {
		cmd := exec.Command(c.Bin, "--config", filepath.Join(c.Nodes[0].Dir, "admin.yaml"), "apply", "-f", o.retention)
		cmd.Env = append(os.Environ(), "HOME="+c.Dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apply %s: %w\n%s", o.retention, err, out)
		}
	}
	l, err := benchkit.NewLoaderRetry(ctx, c, "soak", 1, 2*time.Minute)
	if err != nil {
		return err
	}
	defer l.Close()
	retention := "none"
	if o.retention != "" {
		retention = o.retention
	}
	fmt.Printf("soak: %d nodes, %.0f ev/s offered in %d-event batches for %.0f min, retention %s, sample every %s\n",
		o.nodes, o.rate, o.batch, o.minutes, retention, o.interval)

	lctx, stopLoad := context.WithTimeout(ctx, time.Duration(o.minutes*float64(time.Minute)))
	defer stopLoad()
	loadDone := make(chan struct{})
	start := time.Now()
	var interruptions []string
	var imu sync.Mutex
	go func() {
		defer close(loadDone)
		l.RunResilient(lctx, c, o.batch, o.window, o.rate, func(err error) {
			imu.Lock()
			interruptions = append(interruptions, fmt.Sprintf("%.1f min: %v", time.Since(start).Minutes(), err))
			imu.Unlock()
		})
	}()

	var series []sample
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	prevCommitted := int64(0)
	header := "| min | ev/s committed | p99 commit ms |"
	sep := "| --- | --- | --- |"
	for _, n := range c.Nodes {
		header += fmt.Sprintf(" %s disk MiB (archive) | %s RssAnon MiB | %s live heap MiB | %s oldest s | %s segments MiB (held) |", n.ID, n.ID, n.ID, n.ID, n.ID)
		sep += " --- | --- | --- | --- | --- |"
	}
	fmt.Println(header)
	fmt.Println(sep)
loop:
	for {
		select {
		case <-tick.C:
		case <-loadDone:
			break loop
		}
		s := sample{at: time.Since(start), committed: l.Committed.Load(), p99: benchkit.Percentile(l.Latencies(), 99)}
		for _, n := range c.Nodes {
			arch := benchkit.DirBytes(filepath.Join(n.Dir, "archive"))
			s.disk, s.archive = append(s.disk, benchkit.DirBytes(n.Dir)-arch), append(s.archive, arch)
			m, err := n.Memory(ctx, false)
			if err != nil {
				return fmt.Errorf("memory of %s: %w", n.ID, err)
			}
			s.rss = append(s.rss, m.RssAnonMiB)
			// RssAnon before the collection (what the node holds), the live heap after it.
			if m, err = n.Memory(ctx, true); err != nil {
				return fmt.Errorf("memory of %s: %w", n.ID, err)
			}
			s.live = append(s.live, m.HeapAllocMiB)
			v, err := n.Metrics(ctx, "crossdock_ledger_oldest_event_age_seconds",
				`crossdock_ledger_segment_bytes{state="all"}`, `crossdock_ledger_segment_bytes{state="held"}`)
			if err != nil {
				return err
			}
			s.age, s.segAll, s.segHeld = append(s.age, v[0]), append(s.segAll, v[1]/(1<<20)), append(s.segHeld, v[2]/(1<<20))
		}
		series = append(series, s)
		line := fmt.Sprintf("| %.1f | %.0f | %.1f |", s.at.Minutes(), float64(s.committed-prevCommitted)/o.interval.Seconds(), float64(s.p99.Microseconds())/1000)
		for i := range c.Nodes {
			line += fmt.Sprintf(" %.0f (%.0f) | %.0f | %.0f | %.0f | %.0f (%.0f) |", float64(s.disk[i])/(1<<20), float64(s.archive[i])/(1<<20), s.rss[i], s.live[i], s.age[i], s.segAll[i], s.segHeld[i])
		}
		fmt.Println(line)
		prevCommitted = s.committed
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	imu.Lock()
	fmt.Printf("\nstream interruptions (the load generator reconnected to the leader): %d\n", len(interruptions))
	for _, s := range interruptions {
		fmt.Println("  " + s)
	}
	imu.Unlock()
	var xs []float64
	var after []sample
	for _, s := range series {
		if s.at >= o.settle {
			after = append(after, s)
			xs = append(xs, s.at.Minutes())
		}
	}
	if len(after) < 2 {
		fmt.Printf("fewer than 2 samples after %s: no slopes (run longer than -settle)\n", o.settle)
		return nil
	}
	fmt.Printf("\nslopes over the %d samples after %s (per minute):\n", len(after), o.settle)
	slope := func(f func(s sample) float64) float64 {
		ys := make([]float64, len(after))
		for i, s := range after {
			ys[i] = f(s)
		}
		return benchkit.Slope(xs, ys)
	}
	fmt.Printf("p99 commit latency: %+.2f ms/min\n", slope(func(s sample) float64 { return float64(s.p99.Microseconds()) / 1000 }))
	for i, n := range c.Nodes {
		fmt.Printf("%s: disk without the archive %+.1f MiB/min, archive %+.1f MiB/min, RssAnon %+.1f MiB/min, live heap %+.1f MiB/min, segments %+.1f MiB/min (held %+.1f), oldest event age %+.1f s/min\n",
			n.ID,
			slope(func(s sample) float64 { return float64(s.disk[i]) / (1 << 20) }),
			slope(func(s sample) float64 { return float64(s.archive[i]) / (1 << 20) }),
			slope(func(s sample) float64 { return s.rss[i] }),
			slope(func(s sample) float64 { return s.live[i] }),
			slope(func(s sample) float64 { return s.segAll[i] }),
			slope(func(s sample) float64 { return s.segHeld[i] }),
			slope(func(s sample) float64 { return s.age[i] }))
	}
	return nil
}
