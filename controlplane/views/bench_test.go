package views

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/demo/sample"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	"google.golang.org/protobuf/proto"
)

func rawEvent(b testing.TB, ev *eventv1.Event, seq uint64) ledger.RawEvent {
	p, err := proto.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	return ledger.RawEvent{Seq: seq, CommittedAt: t0, Event: p}
}

// BenchmarkRebuild fills a ledger on disk with sample inventory changes (the
// benchmarks' distributor: 2,000 SKUs at 3 warehouses, 256-byte events, entries of
// 500), then times views built from it: the start-up rebuild. VIEWS_BENCH_EVENTS sets
// the number of events (200,000 by default). Reported: ns per event read, and the
// rebuild time per million events.
func BenchmarkRebuild(b *testing.B) {
	n := 200_000
	if s := os.Getenv("VIEWS_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	tl := newTestLog(b, true)
	gen := sample.NewInventory(1, sample.DefaultWarehouses, 2000, t0)
	for done := 0; done < n; done += 500 {
		evs := make([]*eventv1.Event, 0, 500)
		for range 500 {
			evs = append(evs, gen.Next())
		}
		tl.ingest(evs...)
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		v := New(LedgerSource{L: tl.l}, Options{Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = v.Run(ctx) }()
		waitSeq(b, v, tl.l.LastSeq())
		d := time.Since(start)
		cancel()
		<-done
		b.ReportMetric(float64(d.Nanoseconds())/float64(n), "ns/event")
		b.ReportMetric(d.Seconds()*1e6/float64(n), "s/Mevents")
	}
}

// BenchmarkMemoryPerLevel folds 1,000,000 levels of (sku, location) pairs, with 3 or
// 10 locations per SKU, and reports the heap each entry takes (after GC), with the
// numbers of a typical level ("120", "5", "115"), 11-character SKUs and locations
// interned. The SKU's own share (its name, map entry and slot) is included.
func BenchmarkMemoryPerLevel(b *testing.B) {
	for _, locs := range []int{3, 10} {
		b.Run(fmt.Sprintf("locations=%d", locs), func(b *testing.B) {
			skus := 1_000_000 / locs
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				st := newState()
				for i := range skus {
					for j := range locs {
						ev := lvl(fmt.Sprintf("SKU-%07d", i), fmt.Sprintf("WH-%02d", j), "120", time.Time{})
						ev.GetInventoryLevel().Allocated, ev.GetInventoryLevel().Available = "5", "115"
						if err := st.fold(rawEvent(b, ev, uint64(i*locs+j+1))); err != nil {
							b.Fatal(err)
						}
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(skus*locs), "bytes/entry")
				runtime.KeepAlive(st)
			}
		})
	}
}

// BenchmarkFollow measures what following costs while entries are applied: the same
// entries (500 sample events each) are applied to a ledger on disk with views
// following it and without, alternately, and the process CPU time per event of each
// is reported (cpu-ns/event), with the difference: the views' cost per event on a node.
func BenchmarkFollow(b *testing.B) {
	const entries, per = 200, 500
	gen := sample.NewInventory(1, sample.DefaultWarehouses, 2000, t0)
	batches := make([][]*eventv1.Event, entries)
	for i := range batches {
		for range per {
			batches[i] = append(batches[i], gen.Next())
		}
	}
	var off, on time.Duration
	for range b.N {
		for _, views := range []bool{false, true} {
			tl := newTestLog(b, true)
			var v *Views
			var stop func()
			if views {
				v = New(LedgerSource{L: tl.l}, Options{Logger: slog.New(slog.DiscardHandler)})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = v.Run(ctx) }()
				stop = func() { cancel(); <-done }
			}
			runtime.GC()
			c0 := cpuTime(b)
			for _, evs := range batches {
				for _, ev := range evs {
					ev.Id = "" // ingest numbers them again
				}
				tl.ingest(evs...)
			}
			if v != nil {
				waitSeq(b, v, tl.l.LastSeq())
			}
			d := cpuTime(b) - c0
			if stop != nil {
				stop()
			}
			if views {
				on += d
			} else {
				off += d
			}
		}
	}
	n := float64(b.N * entries * per)
	b.ReportMetric(float64(off.Nanoseconds())/n, "off-cpu-ns/event")
	b.ReportMetric(float64(on.Nanoseconds())/n, "on-cpu-ns/event")
	b.ReportMetric(float64((on-off).Nanoseconds())/n, "views-cpu-ns/event")
}

func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
