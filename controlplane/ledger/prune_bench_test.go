package ledger

import (
	"context"
	"testing"

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
				arc, err := archive.OpenDir(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				l, err := Open(Options{Dir: b.TempDir(), Archiver: arc})
				if err != nil {
					b.Fatal(err)
				}
				k := newKeyLog(b)
				k.add(flushSeqs+step+2000, 500, skuKeys(2000), l)
				m := &storev1.PruneLedger{DefaultBelow: uint64(step) + 1}
				if ahead {
					if _, _, err := l.ArchiveAhead(context.Background(), arc, m, 1<<30); err != nil {
						b.Fatal(err)
					}
				}
				cmd := pruneCmd(b, m)
				k.lg.cmds = append(k.lg.cmds, cmd)
				idx := uint64(len(k.lg.cmds))
				b.StartTimer()
				res, err := l.Apply(idx, at(idx), cmd)
				b.StopTimer()
				if err != nil || res.(*storev1.PruneResult).GetEventsPruned() != uint64(step) {
					b.Fatalf("prune: %v %v", res, err)
				}
				l.Close()
			}
		})
	}
}
