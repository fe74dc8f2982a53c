package ledger

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/archive"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// BenchmarkPruneApply times the Apply of one PRUNE_LEDGER step on a ledger on disk with
// a real archive directory: what every commit behind it waits for. archive-in-apply is
// the Apply archiving the events itself (gzip, write, fsync); archived-ahead runs
// ArchiveAhead first (untimed, as every node does in the background), so the Apply only
// reads and deletes. step50k is the step size before (pruneMaxEvents was 50,000).
func BenchmarkPruneApply(b *testing.B) {
	for _, bc := range []struct {
		name  string
		step  int
		ahead bool
	}{{"step50k-archive-in-apply", 50_000, false}, {"step10k-archive-in-apply", 10_000, false}, {"step10k-archived-ahead", 10_000, true}, {"step2500-archived-ahead", 2_500, true}} {
		step, ahead := bc.step, bc.ahead
		b.Run(bc.name, func(b *testing.B) {
			defer func(e, a int) { pruneMaxEvents, pruneMaxArchived = e, a }(pruneMaxEvents, pruneMaxArchived)
			pruneMaxEvents, pruneMaxArchived = step, 32<<20
			for range b.N {
				b.StopTimer()
				l, arc := archivedLedger(b)
				k := newKeyLog(b)
				k.add(flushSeqs+step+2000, 500, skuKeys(2000), l)
				m := &storev1.PruneLedger{DefaultBelow: uint64(step) + 1}
				if ahead {
					if _, _, err := l.ArchiveAhead(context.Background(), arc, m, 1<<30); err != nil {
						b.Fatal(err)
					}
				}
				res, err := timedPrune(b, k, l, m)
				if err != nil || res.GetEventsPruned() != uint64(step) {
					b.Fatalf("prune: %v %v", res, err)
				}
				l.Close()
			}
		})
	}
}

// BenchmarkPruneSteady times prune steps in the steady state of a node under retention:
// 100-event batches keep arriving, and every 10 steps a prune (as the leader proposes one
// every --prune-interval) removes the oldest 25,000 events in steps of 2,500, the last
// of which also sweeps the key index. The history below the low-water mark is all
// deletions (tombstones), which grow with every step until Badger compacts them away;
// before the timed steps, 200 warm steps prune 500,000 events this way. One op is one
// step. A step's cost must not grow with the pruned history (the 30-minute soak of
// 2026-12-05 found its chunk searches reading through those tombstones).
func BenchmarkPruneSteady(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchmarkPruneSteady(b, nil) })
	// inventory.level compacted, as the default Retention document does.
	b.Run("compact", func(b *testing.B) { benchmarkPruneSteady(b, []string{"inventory.level"}) })
}

func benchmarkPruneSteady(b *testing.B, compact []string) {
	const (
		batch  = 100
		step   = 2_500
		steps  = 10     // per prune
		window = 50_000 // events held
		warm   = 200    // steps before the timed ones
	)
	defer func(e int) { pruneMaxEvents = e }(pruneMaxEvents)
	pruneMaxEvents = step
	l, arc := archivedLedger(b)
	defer l.Close()
	k := newKeyLog(b)
	keys := skuKeys(2000)
	k.add(window, batch, keys, l)
	var (
		m     *storev1.PruneLedger
		more  bool
		took  []time.Duration // the timed steps that removed events, each
		sweep []time.Duration // those that only swept the key index (the last of a prune)
	)
	stepOnce := func() {
		if !more {
			k.add(step*steps, batch, keys, l)
			m = &storev1.PruneLedger{DefaultBelow: k.seq - window + 1, MaxEvents: step, Compact: compact}
			if _, _, err := l.ArchiveAhead(context.Background(), arc, m, 1<<30); err != nil {
				b.Fatal(err)
			}
		}
		t0 := time.Now()
		r, err := timedPrune(b, k, l, m)
		d := time.Since(t0)
		if err != nil || r.GetError() != "" || (r.GetEventsPruned() == 0 && !more) {
			b.Fatalf("prune: %v %v", r, err)
		}
		if r.GetEventsPruned() == 0 {
			sweep = append(sweep, d)
		} else {
			took = append(took, d)
		}
		more = r.GetMore()
	}
	b.StopTimer()
	for range warm {
		stepOnce()
	}
	took, sweep = nil, nil
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		stepOnce()
	}
	// What the commits behind a step wait for: the steps that remove events, and those
	// after them in each prune that only sweep the key index.
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"step", took}, {"sweep-step", sweep}} {
		if len(s.ds) == 0 {
			continue
		}
		slices.Sort(s.ds)
		b.ReportMetric(float64(s.ds[len(s.ds)/2].Microseconds())/1000, "ms-p50-"+s.name)
		b.ReportMetric(float64(s.ds[len(s.ds)*99/100].Microseconds())/1000, "ms-p99-"+s.name)
	}
}

// archivedLedger opens a ledger on disk with an archive directory of its own.
func archivedLedger(b *testing.B) (*Ledger, *archive.Dir) {
	arc, err := archive.OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	l, err := Open(Options{Dir: b.TempDir(), Archiver: arc})
	if err != nil {
		b.Fatal(err)
	}
	return l, arc
}

// timedPrune applies m to l at k's next index, with only the Apply timed.
func timedPrune(b *testing.B, k *keyLog, l *Ledger, m *storev1.PruneLedger) (*storev1.PruneResult, error) {
	cmd := pruneCmd(b, m)
	k.lg.cmds = append(k.lg.cmds, cmd)
	idx := uint64(len(k.lg.cmds))
	b.StartTimer()
	res, err := l.Apply(idx, at(idx), cmd)
	b.StopTimer()
	r, _ := res.(*storev1.PruneResult)
	return r, err
}
