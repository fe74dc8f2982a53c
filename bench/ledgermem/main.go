// Command ledgermem measures a control plane node's memory as its ledger grows: it
// starts one real `crossdock server` process of the built binary (with --pprof-listen),
// streams 256-byte events into it like agents do (no retention), and at each ledger
// size reads the node's resident anonymous memory (RssAnon in /proc/<pid>/status: the
// Go heap, Badger's caches and anything else not backed by a file) and its live Go heap
// (HeapAlloc after a collection, from /debug/pprof/heap), once while ingesting and once
// after a restart. It then says whether the figures at the sizes after the first stay
// within 10% of each other (caches full: memory set by configuration, not history).
//
//	make build && go run ./bench/ledgermem -bin bin/crossdock -sizes 1M,4M,16M
//
// -profiles DIR keeps two heap profiles per size, ingesting and restarted
// (`go tool pprof -top DIR/heap-4M-restarted.pb.gz`; `-diff_base` of two sizes shows
// what grew).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	serverFlags := flag.String("server-flags", "", "extra flags for crossdock server, space separated (e.g. \"--ledger-cache 512MiB\")")
	profiles := flag.String("profiles", "", "directory to keep a heap profile per size in (none when empty)")
	keep := flag.Bool("keep", false, "keep the data directory")
	tolerance := flag.Float64("tolerance", 0.10, "allowed spread of the figures after the first size")
	strict := flag.Bool("strict", false, "exit with status 3 when a figure is not within -tolerance (make bench goes on either way)")
	flag.Parse()
	sizes, err := benchkit.ParseSizes(*sizesFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgermem:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, *bin, sizes, *loaders, *batch, *window, strings.Fields(*serverFlags), *profiles, *keep, *tolerance)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgermem:", err)
		os.Exit(1)
	}
	if !ok && *strict {
		os.Exit(3)
	}
}

type row struct {
	events          int
	loadSecs        float64
	live, restarted benchkit.Mem
	disk            int64
}

func run(ctx context.Context, bin string, sizes []int, nLoaders, batch, window int, extra []string, profiles string, keep bool, tol float64) (bool, error) {
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
		if err := c.Restart(node); err != nil {
			return false, err
		}
		if err := benchkit.Poll(ctx, 100*time.Millisecond, 5*time.Minute, "the restarted node to lead", func() bool { return c.Voters(ctx) == 1 }); err != nil {
			c.TailLogs(os.Stderr)
			return false, err
		}
		if r.restarted, err = node.Memory(ctx, true); err != nil {
			return false, err
		}
		if profiles != "" {
			if err := node.SaveHeapProfile(ctx, filepath.Join(profiles, "heap-"+benchkit.SizeLabel(size)+"-restarted.pb.gz")); err != nil {
				return false, err
			}
		}
		r.disk = benchkit.DirBytes(node.Dir)
		rows = append(rows, r)
		fmt.Printf("%s events loaded in %.0f s (%.0f ev/s): RssAnon %.0f MiB, heap %.0f MiB; after restart RssAnon %.0f MiB, heap %.0f MiB; data dir %.0f MiB\n",
			benchkit.SizeLabel(size), r.loadSecs, float64(size-prev(rows))/r.loadSecs, r.live.RssAnonMiB, r.live.HeapAllocMiB, r.restarted.RssAnonMiB, r.restarted.HeapAllocMiB, float64(r.disk)/(1<<20))
	}
	fmt.Println()
	fmt.Println("| events | RssAnon MiB (ingesting) | live heap MiB (ingesting) | RssAnon MiB (restarted) | live heap MiB (restarted) | data dir MiB |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.0f | %.0f |\n", benchkit.SizeLabel(r.events), r.live.RssAnonMiB, r.live.HeapAllocMiB, r.restarted.RssAnonMiB, r.restarted.HeapAllocMiB, float64(r.disk)/(1<<20))
	}
	if len(rows) >= 2 {
		a, b := rows[0], rows[len(rows)-1]
		de := float64(b.events - a.events)
		fmt.Printf("growth %s→%s: RssAnon %.1f bytes/event ingesting, %.1f after restart; live heap %.1f bytes/event ingesting, %.1f after restart\n",
			benchkit.SizeLabel(a.events), benchkit.SizeLabel(b.events),
			(b.live.RssAnonMiB-a.live.RssAnonMiB)*(1<<20)/de, (b.restarted.RssAnonMiB-a.restarted.RssAnonMiB)*(1<<20)/de,
			(b.live.HeapAllocMiB-a.live.HeapAllocMiB)*(1<<20)/de, (b.restarted.HeapAllocMiB-a.restarted.HeapAllocMiB)*(1<<20)/de)
	}
	// The first size fills the caches; the figures after it must stay within tol.
	cmp := rows
	if len(rows) > 2 {
		cmp = rows[1:]
	}
	ok := true
	for _, m := range []struct {
		name string
		get  func(row) float64
	}{
		{"RssAnon ingesting", func(r row) float64 { return r.live.RssAnonMiB }},
		{"live heap ingesting", func(r row) float64 { return r.live.HeapAllocMiB }},
		{"RssAnon restarted", func(r row) float64 { return r.restarted.RssAnonMiB }},
		{"live heap restarted", func(r row) float64 { return r.restarted.HeapAllocMiB }},
	} {
		lo, hi := m.get(cmp[0]), m.get(cmp[0])
		for _, r := range cmp {
			lo, hi = min(lo, m.get(r)), max(hi, m.get(r))
		}
		spread := (hi - lo) / lo
		verdict := "within"
		if spread > tol {
			verdict, ok = "NOT within", false
		}
		fmt.Printf("%s from %s to %s: %.0f–%.0f MiB, spread %.1f%%: %s %.0f%%\n", m.name, benchkit.SizeLabel(cmp[0].events), benchkit.SizeLabel(cmp[len(cmp)-1].events), lo, hi, spread*100, verdict, tol*100)
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
