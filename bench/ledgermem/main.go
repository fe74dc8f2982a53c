// Command ledgermem measures a control plane node's memory as its ledger grows: it
// starts one real `crossdock server` process of the built binary (with --pprof-listen),
// streams 256-byte events into it like agents do (no retention), and at each ledger
// size reads the node's resident anonymous memory (RssAnon in /proc/<pid>/status: the
// Go heap, Badger's caches and anything else not backed by a file) and its live Go heap
// (HeapAlloc after a collection, from /debug/pprof/heap): right after the load, again
// once the figures have settled (the node idle: a memtable flush or a raft-wal buffer
// that the last batches left in flight is done and its memory reused or returned, and
// no raft snapshot running, when the node exports crossdock_raft_snapshot_running), and
// after a restart, settled the same way. It then says whether the figures stay within
// 10% of each other at every size (memory set by configuration, not history): the live
// heap settled and restarted, and RssAnon restarted. RssAnon settled is printed beside
// them but not judged: it holds the part of the memtable filled so far, which depends
// on where the memtable's cycle stands when the load ends, not on the events held,
// whereas a restart starts every size at the same point of that cycle (the clean stop
// flushed the memtable). The figures right after the load hold whatever transient the
// load's last second left.
//
//	make build && go run ./bench/ledgermem -bin bin/crossdock -sizes 1M,4M,16M
//
// A second table shows what moves RssAnon besides live objects: the heap in use (it
// counts a memtable's arena whole, resident only as the memtable fills), the free heap
// the runtime still holds, the block cache (builds before the nineteenth session had
// one) and the bytes in the memtables' logs (which stand for how far the memtable has
// filled).
//
// -profiles DIR keeps three heap profiles per size: right after the load, settled and
// restarted (`go tool pprof -top DIR/heap-4M-settled.pb.gz`; `-diff_base` of two sizes
// shows what grew).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/crossdock/crossdock/bench/internal/benchkit"
)

func main() {
	bin := flag.String("bin", "bin/crossdock", "crossdock binary")
	sizesFlag := flag.String("sizes", "1M,4M,16M", "ledger sizes at which to measure, in events (K and M suffixes)")
	loaders := flag.Int("agents", 4, "concurrent uplink streams (one enrolled agent each)")
	batch := flag.Int("batch", 1000, "events per uplink batch")
	window := flag.Int("window", 4, "batches in flight per stream")
	serverFlags := flag.String("server-flags", "", "extra flags for crossdock server, space separated (e.g. \"--memory-limit 2GiB\")")
	profiles := flag.String("profiles", "", "directory to keep a heap profile per size in (none when empty)")
	keep := flag.Bool("keep", false, "keep the data directory")
	tolerance := flag.Float64("tolerance", 0.10, "allowed spread of the figures after the first size")
	settleMax := flag.Duration("settle", 10*time.Minute, "longest wait for a node's memory to settle after the load and after a restart")
	strict := flag.Bool("strict", false, "exit with status 3 when a figure is not within -tolerance (make bench goes on either way)")
	flag.Parse()
	sizes, err := benchkit.ParseSizes(*sizesFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgermem:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, *bin, sizes, *loaders, *batch, *window, strings.Fields(*serverFlags), *profiles, *keep, *tolerance, *settleMax)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgermem:", err)
		os.Exit(1)
	}
	if !ok && *strict {
		os.Exit(3)
	}
}

type row struct {
	events                   int
	loadSecs                 float64
	live, settled, restarted benchkit.Mem
	settleSecs, restartSecs  float64 // how long each settled
	settledG, restartedG     gauges
	disk                     int64
}

// gauges are what the node exports of its raft log and block cache, in MiB (-1: not
// exported by this build).
type gauges struct{ raftLogMiB, blockCacheMiB, memtableMiB float64 }

// memtableLogMiB is what the ledger's memtables hold, read from outside: the bytes
// written to their logs (Badger's .mem files, sparse files of a fixed size whose
// allocated blocks are the entries written so far). A memtable's arena is allocated
// whole with the table (heap in use) and becomes resident as it fills, so RssAnon
// follows it.
func memtableLogMiB(dir string) float64 {
	var n int64
	_ = filepath.WalkDir(filepath.Join(dir, "ledger"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".mem" {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return float64(n) / (1 << 20)
}

// settleEvery, settleSamples and settleSpread: the node's memory has settled when
// settleSamples samples settleEvery apart (each after a collection) agree within
// settleSpread, in live heap and in RssAnon.
const (
	settleEvery   = 2 * time.Second
	settleSamples = 3
	settleSpread  = 0.02
)

// settle samples the node's memory until it has settled or longest has passed, and
// returns the last sample and how long it took.
func settle(ctx context.Context, node *benchkit.Node, longest time.Duration) (m benchkit.Mem, secs float64, g gauges, err error) {
	t0 := time.Now()
	var last []benchkit.Mem
	quiet := 0 // samples in a row without a raft snapshot running
	g = gauges{raftLogMiB: -1, blockCacheMiB: -1}
	for {
		m, err = node.Memory(ctx, true)
		if err != nil {
			return m, 0, g, err
		}
		last = append(last, m)
		if len(last) > settleSamples {
			last = last[1:]
		}
		// A snapshot reads the whole ledger and holds the raft log until it is done: the
		// node is not idle while one runs. Builds without the gauge are taken as idle.
		quiet++
		if v, err := node.Metrics(ctx, "crossdock_raft_snapshot_running", "crossdock_raft_log_bytes"); err == nil {
			if v[0] != 0 {
				quiet = 0
			}
			g.raftLogMiB = v[1] / (1 << 20)
		}
		// Builds of the nineteenth session on have no block cache (tables are read from
		// the page cache) and no gauge for it.
		if v, err := node.Metrics(ctx, "crossdock_ledger_block_cache_bytes"); err == nil {
			g.blockCacheMiB = v[0] / (1 << 20)
		}
		g.memtableMiB = memtableLogMiB(node.Dir)
		if len(last) == settleSamples && agree(last) && quiet >= settleSamples {
			return m, time.Since(t0).Seconds(), g, nil
		}
		if time.Since(t0) >= longest {
			fmt.Printf("  memory did not settle within %s (last %d samples: RssAnon %.0f–%.0f MiB; samples without a snapshot running %d); taking the last\n", longest, len(last), last[0].RssAnonMiB, m.RssAnonMiB, quiet)
			return m, time.Since(t0).Seconds(), g, nil
		}
		select {
		case <-ctx.Done():
			return m, 0, g, ctx.Err()
		case <-time.After(settleEvery):
		}
	}
}

func agree(ms []benchkit.Mem) bool {
	heapLo, heapHi := bounds(ms, func(m benchkit.Mem) float64 { return m.HeapAllocMiB })
	rssLo, rssHi := bounds(ms, func(m benchkit.Mem) float64 { return m.RssAnonMiB })
	return heapHi-heapLo <= settleSpread*heapLo && rssHi-rssLo <= settleSpread*rssLo
}

// bounds is the least and greatest of get over xs (not empty).
func bounds[T any](xs []T, get func(T) float64) (lo, hi float64) {
	lo, hi = get(xs[0]), get(xs[0])
	for _, x := range xs[1:] {
		lo, hi = min(lo, get(x)), max(hi, get(x))
	}
	return lo, hi
}

func run(ctx context.Context, bin string, sizes []int, nLoaders, batch, window int, extra []string, profiles string, keep bool, tol float64, settleMax time.Duration) (bool, error) {
	dir, err := os.MkdirTemp("", "ledgermem-")
	if err != nil {
		return false, err
	}
	if keep {
		fmt.Println("data in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if profiles != "" {
		if err := os.MkdirAll(profiles, 0o755); err != nil {
			return false, err
		}
	}
	c, err := benchkit.Start(ctx, bin, dir, 1, extra...)
	defer c.Stop()
	if err != nil {
		c.TailLogs(os.Stderr)
		return false, err
	}
	node := c.Nodes[0]
	fmt.Printf("ledgermem: one node, %d-byte events, %d streams of %d-event batches; server flags %q\n", benchkit.EventSize, nLoaders, batch, strings.Join(extra, " "))
	base, err := node.Memory(ctx, true)
	if err != nil {
		return false, err
	}
	fmt.Printf("empty node: RssAnon %.0f MiB, heap %.0f MiB\n", base.RssAnonMiB, base.HeapAllocMiB)
	var rows []row
	loaded := 0
	for _, size := range sizes {
		t0 := time.Now()
		if err := load(ctx, c, size-loaded, nLoaders, batch, window); err != nil {
			c.TailLogs(os.Stderr)
			return false, fmt.Errorf("load to %s: %w", benchkit.SizeLabel(size), err)
		}
		r := row{events: size, loadSecs: time.Since(t0).Seconds()}
		loaded = size
		if r.live, err = node.Memory(ctx, true); err != nil {
			return false, err
		}
		if profiles != "" {
			if err := node.SaveHeapProfile(ctx, filepath.Join(profiles, "heap-"+benchkit.SizeLabel(size)+".pb.gz")); err != nil {
				return false, err
			}
		}
		if r.settled, r.settleSecs, r.settledG, err = settle(ctx, node, settleMax); err != nil {
			return false, err
		}
		if profiles != "" {
			if err := node.SaveHeapProfile(ctx, filepath.Join(profiles, "heap-"+benchkit.SizeLabel(size)+"-settled.pb.gz")); err != nil {
				return false, err
			}
		}
		if err := c.Restart(node); err != nil {
			return false, err
		}
		if err := benchkit.Poll(ctx, 100*time.Millisecond, 5*time.Minute, "the restarted node to lead", func() bool { return c.Voters(ctx) == 1 }); err != nil {
			c.TailLogs(os.Stderr)
			return false, err
		}
		if r.restarted, r.restartSecs, r.restartedG, err = settle(ctx, node, settleMax); err != nil {
			return false, err
		}
		if profiles != "" {
			if err := node.SaveHeapProfile(ctx, filepath.Join(profiles, "heap-"+benchkit.SizeLabel(size)+"-restarted.pb.gz")); err != nil {
				return false, err
			}
		}
		r.disk = benchkit.DirBytes(node.Dir)
		rows = append(rows, r)
		fmt.Printf("%s events loaded in %.0f s (%.0f ev/s): right after the load RssAnon %.0f MiB, heap %.0f MiB; settled in %.0f s: RssAnon %.0f MiB, heap %.0f MiB; restarted, settled in %.0f s: RssAnon %.0f MiB, heap %.0f MiB; data dir %.0f MiB; raft log settled %.0f MiB, restarted %.0f MiB; block cache settled %.0f MiB, restarted %.0f MiB (-1: not exported)\n",
			benchkit.SizeLabel(size), r.loadSecs, float64(size-prev(rows))/r.loadSecs, r.live.RssAnonMiB, r.live.HeapAllocMiB, r.settleSecs, r.settled.RssAnonMiB, r.settled.HeapAllocMiB, r.restartSecs, r.restarted.RssAnonMiB, r.restarted.HeapAllocMiB, float64(r.disk)/(1<<20), r.settledG.raftLogMiB, r.restartedG.raftLogMiB, r.settledG.blockCacheMiB, r.restartedG.blockCacheMiB)
	}
	fmt.Println()
	fmt.Println("| events | RssAnon / live heap MiB, right after the load | RssAnon / live heap MiB, settled | RssAnon / live heap MiB, restarted and settled | data dir MiB |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f |\n", benchkit.SizeLabel(r.events), r.live.RssAnonMiB, r.live.HeapAllocMiB, r.settled.RssAnonMiB, r.settled.HeapAllocMiB, r.restarted.RssAnonMiB, r.restarted.HeapAllocMiB, float64(r.disk)/(1<<20))
	}
	// What RssAnon holds besides live objects: the heap the Go runtime keeps after a
	// collection freed it (HeapIdle - HeapReleased, resident until its scavenger returns
	// it, which it does only beyond about 10% over the heap goal: twice the live heap by
	// default, or --memory-limit), and heap in use that was never touched (a memtable's
	// arena is allocated whole and becomes resident as it fills).
	fmt.Println()
	fmt.Println("| events | settled: RssAnon / heap in use / free heap held / block cache / memtable logs, MiB | restarted: the same |")
	fmt.Println("| --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f / %.0f / %.0f / %.0f / %.0f | %.0f / %.0f / %.0f / %.0f / %.0f |\n", benchkit.SizeLabel(r.events),
			r.settled.RssAnonMiB, r.settled.HeapInuseMiB, r.settled.HeapIdleMiB, r.settledG.blockCacheMiB, r.settledG.memtableMiB,
			r.restarted.RssAnonMiB, r.restarted.HeapInuseMiB, r.restarted.HeapIdleMiB, r.restartedG.blockCacheMiB, r.restartedG.memtableMiB)
	}
	if len(rows) >= 2 {
		a, b := rows[0], rows[len(rows)-1]
		de := float64(b.events - a.events)
		fmt.Printf("growth %s→%s: RssAnon %.1f bytes/event settled, %.1f restarted; live heap %.1f bytes/event settled, %.1f restarted\n",
			benchkit.SizeLabel(a.events), benchkit.SizeLabel(b.events),
			(b.settled.RssAnonMiB-a.settled.RssAnonMiB)*(1<<20)/de, (b.restarted.RssAnonMiB-a.restarted.RssAnonMiB)*(1<<20)/de,
			(b.settled.HeapAllocMiB-a.settled.HeapAllocMiB)*(1<<20)/de, (b.restarted.HeapAllocMiB-a.restarted.HeapAllocMiB)*(1<<20)/de)
	}
	// Judged at every size: the node has no cache that only a larger ledger fills (the
	// ledger reads its tables from the page cache). RssAnon settled is printed but not
	// judged: it holds the part of the memtable filled so far, which depends on where
	// the memtable's cycle stands when the load ends (the second table's memtable logs),
	// not on the events held; the restarted figures are taken at the same point of that
	// cycle at every size (the clean stop flushed the memtable).
	cmp := rows
	ok := true
	for _, m := range []struct {
		name   string
		get    func(row) float64
		judged bool
		why    string
	}{
		{"RssAnon right after the load", func(r row) float64 { return r.live.RssAnonMiB }, false, "a transient"},
		{"live heap right after the load", func(r row) float64 { return r.live.HeapAllocMiB }, false, "a transient"},
		{"RssAnon settled", func(r row) float64 { return r.settled.RssAnonMiB }, false, "follows the memtable's fill"},
		{"live heap settled", func(r row) float64 { return r.settled.HeapAllocMiB }, true, ""},
		{"RssAnon restarted", func(r row) float64 { return r.restarted.RssAnonMiB }, true, ""},
		{"live heap restarted", func(r row) float64 { return r.restarted.HeapAllocMiB }, true, ""},
	} {
		lo, hi := bounds(cmp, m.get)
		spread := (hi - lo) / lo
		verdict := "within"
		if spread > tol {
			verdict = "NOT within"
			ok = ok && !m.judged
		}
		note := ""
		if !m.judged {
			note = " (not judged: " + m.why + ")"
		}
		fmt.Printf("%s from %s to %s: %.0f–%.0f MiB, spread %.1f%%: %s %.0f%%%s\n", m.name, benchkit.SizeLabel(cmp[0].events), benchkit.SizeLabel(cmp[len(cmp)-1].events), lo, hi, spread*100, verdict, tol*100, note)
	}
	return ok, nil
}

func prev(rows []row) int {
	if len(rows) < 2 {
		return 0
	}
	return rows[len(rows)-2].events
}

// load commits n more events through nLoaders concurrent streams (fresh agents).
var loaderSeq int

func load(ctx context.Context, c *benchkit.Cluster, n, nLoaders, batch, window int) error {
	if n <= 0 {
		return nil
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, nLoaders)
	for i := range nLoaders {
		loaderSeq++
		l, err := benchkit.NewLoader(ctx, c, leader.API, fmt.Sprintf("load-%d", loaderSeq), uint64(loaderSeq))
		if err != nil {
			return err
		}
		share := n / nLoaders
		if i == 0 {
			share += n % nLoaders
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.Close()
			errs[i] = l.RunN(ctx, c, share, batch, window, 0)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}
