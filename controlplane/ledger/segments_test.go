package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// smallSegments makes segments of 256 KiB for the test, so a few tens of thousands of
// events fill many.
func smallSegments(t *testing.T) {
	defer func(v int64) { t.Cleanup(func() { segmentBytes = v }) }(segmentBytes)
	segmentBytes = 256 << 10
}

// segmentFiles lists the segment files of l's current database and their total size.
func segmentFiles(t *testing.T, l *Ledger) (names []string, total int64) {
	t.Helper()
	h, err := l.acquire()
	if err != nil {
		t.Fatal(err)
	}
	dir := h.segs.dir
	l.release(h)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by the segment worker since ReadDir
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		total += fi.Size()
	}
	return names, total
}

// chunkPointers counts the l/ values of l that are segment pointers and those stored
// inline.
func chunkPointers(t *testing.T, l *Ledger) (ptrs, inline int) {
	t.Helper()
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixLog
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				_, ok, err := decodeSegPtr(v)
				if ok {
					ptrs++
				} else {
					inline++
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ptrs, inline
}

// waitSegments waits until l's segment files hold at most max bytes.
func waitSegments(t *testing.T, l *Ledger, max int64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("segment files of at most %d bytes", max), func() bool {
		_, total := segmentFiles(t, l)
		return total <= max
	})
}

// TestSegmentsFollowRetention: chunks are written to segment files, not Badger; a prune
// of everything below the last flush removes the segments whose chunks are gone (the
// disk follows retention), and the ledger on disk stays equal to one in memory
// (segments in memory) through the prune, a restart and a restore.
func TestSegmentsFollowRetention(t *testing.T) {
	smallSegments(t)
	l1, l2 := newLedger(t, true), newLedger(t, false)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l1, l2)
	if ptrs, inline := chunkPointers(t, l1); ptrs == 0 || inline != 0 {
		t.Fatalf("%d chunks in segments and %d in Badger, want all in segments", ptrs, inline)
	}
	before, size := segmentFiles(t, l1)
	if len(before) < 8 {
		t.Fatalf("%d segment files (%d bytes), want several of %d bytes", len(before), size, segmentBytes)
	}
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("ledgers on disk and in memory differ")
	}
	// Closed segments are synced and sealed in the background; only the active one stays
	// open.
	testutil.WaitFor(t, 10*time.Second, "closed segments sealed", func() bool {
		names, _ := segmentFiles(t, l1)
		open := 0
		for _, n := range names {
			if strings.HasSuffix(n, segOpenExt) {
				open++
			}
		}
		return open == 1
	})

	cut := uint64(2 * flushSeqs)
	k.prune(&storev1.PruneLedger{DefaultBelow: cut, DedupBelow: 0, ComputedAt: timestamppb.New(t0)}, l1, l2)
	if low, _ := l1.LowWater(); low != cut {
		t.Fatalf("LowWater %d, want %d", low, cut)
	}
	// What is held is 300 events and one chunk across the cut: at most the active
	// segment and one more.
	waitSegments(t, l1, 2*segmentBytes)
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("ledgers on disk and in memory differ after the prune")
	}
	want := listAll(t, l2, Filter{}, 0, 1000)
	if got := listAll(t, l1, Filter{}, 0, 1000); !slices.Equal(seqsOf(got), seqsOf(want)) || len(got) < 300 {
		t.Fatalf("held %d events, want %d (at least 300)", len(got), len(want))
	}

	// A restart counts what each segment holds again and keeps serving.
	dir := l1.opts.Dir
	hash := mustHash(t, l1)
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	l1, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { l1.Close() })
	if mustHash(t, l1) != hash {
		t.Fatal("Hash changed across a restart")
	}
	k.add(2000, 500, skuKeys(40), l1, l2)
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("ledgers differ after ingest following a restart")
	}
	cp := testSnapshotRestore(t, l1)
	if ptrs, inline := chunkPointers(t, cp); ptrs == 0 || inline != 0 {
		t.Fatalf("restored ledger: %d chunks in segments and %d in Badger, want all in segments", ptrs, inline)
	}
}

// TestSegmentsMoveLongLivedChunks: chunks kept for a long-lived type (orders) sit in
// segments whose other chunks (inventory levels) were pruned; a prune moves them to the
// active segment so those segments are removed, and every order stays readable.
func TestSegmentsMoveLongLivedChunks(t *testing.T) {
	smallSegments(t)
	l1, l2 := newLedger(t, true), newLedger(t, false)
	lg := raftLog{t: t}
	var seq uint64
	both := func(cmd *storev1.Command) {
		lg.cmds = append(lg.cmds, cmd)
		idx := uint64(len(lg.cmds))
		for _, l := range []*Ledger{l1, l2} {
			if _, err := l.Apply(idx, at(idx), cmd); err != nil {
				t.Fatalf("Apply %d: %v", idx, err)
			}
		}
	}
	// Batches of 500 levels, then one chunk of 20 orders: order chunks hold only orders.
	orders := 0
	for range 80 {
		evs := make([]*storev1.AgentEvent, 0, 520)
		for range 500 {
			seq++
			evs = append(evs, agentEvent(seq, fmt.Sprintf("ev-%d", seq), skuKeys(40)(seq)...))
		}
		both(ingestCmd(t, "a1", evs...))
		evs = evs[:0]
		for range 20 {
			seq++
			evs = append(evs, withType(agentEvent(seq, fmt.Sprintf("ev-%d", seq), "order", fmt.Sprint(seq)), "order.created"))
			orders++
		}
		both(ingestCmd(t, "a1", evs...))
	}
	_, grown := segmentFiles(t, l1)
	cut := uint64(2 * flushSeqs)
	steps := 0
	for more := true; more; steps++ {
		cmd := pruneCmd(t, &storev1.PruneLedger{
			Types:        []*storev1.PruneCutoff{{Type: "order.created", Below: 1}},
			DefaultBelow: cut, ComputedAt: timestamppb.New(t0),
		})
		lg.cmds = append(lg.cmds, cmd)
		idx := uint64(len(lg.cmds))
		for _, l := range []*Ledger{l1, l2} {
			res, err := l.Apply(idx, at(idx), cmd)
			if err != nil {
				t.Fatal(err)
			}
			more = res.(*storev1.PruneResult).GetMore()
		}
	}
	// The levels below the cut were most of the bytes; the orders below it and the
	// events above it are what stays. Each prune moves at most relocateMaxBytes, which
	// these few orders are far below.
	waitSegments(t, l1, grown*2/3)
	if relocatedBytes(t, l1) == 0 {
		t.Fatal("no chunk was moved out of the segments the prune passed")
	}
	if got := listAll(t, l1, Filter{Type: "order.created"}, 0, 1000); len(got) != orders {
		t.Fatalf("%d orders held, want %d", len(got), orders)
	}
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("ledgers on disk and in memory differ after chunks were moved")
	}
	_, after := segmentFiles(t, l1)
	t.Logf("segments: %d bytes before the prune (%d steps), %d after", grown, steps, after)
}

// TestSnapshotReadsRemovedSegments: a snapshot opened before a prune still streams the
// chunks of segments the prune removed while it was open.
func TestSnapshotReadsRemovedSegments(t *testing.T) {
	smallSegments(t)
	l := newLedger(t, true)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	hash := mustHash(t, l)
	snap, err := l.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	k.prune(&storev1.PruneLedger{DefaultBelow: 2 * flushSeqs, ComputedAt: timestamppb.New(t0)}, l)
	waitSegments(t, l, 2*segmentBytes)

	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo after the segments were removed: %v", err)
	}
	cp := newLedger(t, true)
	if err := cp.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := mustHash(t, cp); got != hash {
		t.Fatal("the restored snapshot is not the ledger as it was when the snapshot was opened")
	}
	if got := listAll(t, cp, Filter{}, 0, 1000); len(got) != int(k.seq) {
		t.Fatalf("restored %d events, want %d", len(got), k.seq)
	}
}

// TestOpenRefusesDamagedSegment: a segment that lost its tail, or bytes, in an OS
// crash before it was synced is found when the ledger opens (ErrSegmentDamaged), not
// when a reader reaches it.
func TestOpenRefusesDamagedSegment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(f string, size int64) error
	}{
		{"truncated", func(f string, size int64) error { return os.Truncate(f, size-100) }},
		{"zeroed", func(f string, size int64) error {
			fh, err := os.OpenFile(f, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer fh.Close()
			_, err = fh.WriteAt(make([]byte, 64), size-200)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, segDir := closedLedger(t)
			// The active segment at Close is not sealed: it is checked at Open.
			newest := filepath.Join(segDir, segName(1, false))
			fi, err := os.Stat(newest)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(newest, fi.Size()); err != nil {
				t.Fatal(err)
			}
			_, err = Open(Options{Dir: dir})
			if !errors.Is(err, ErrSegmentDamaged) || !strings.Contains(err.Error(), "segment 1") {
				t.Fatalf("Open of a damaged segment: %v, want ErrSegmentDamaged naming segment 1", err)
			}
		})
	}
}

// TestOpenRemovesUnusedSegment: a segment no chunk is held in (a crash between an append
// and its commit) is removed when the ledger opens, and a closed segment is sealed.
func TestOpenRemovesUnusedSegment(t *testing.T) {
	dir, segDir := closedLedger(t)
	orphan := filepath.Join(segDir, segName(999, false))
	if err := os.WriteFile(orphan, []byte("uncommitted"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open with an unused segment: %v", err)
	}
	if got := len(listAll(t, l, Filter{}, 0, 100)); got != 20 {
		t.Fatalf("%d events after reopening, want 20", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unused segment left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(segDir, segName(1, true))); err != nil {
		t.Fatalf("segment 1 not sealed after a restart closed it: %v", err)
	}
}

// closedLedger writes 20 events to a ledger on disk and closes it.
func closedLedger(t *testing.T) (dir, segDir string) {
	t.Helper()
	dir = t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := raftLog{t: t}
	for i := range 20 {
		lg.ingest(l, "a1", agentEvent(uint64(i+1), id("a1", i)))
	}
	h, err := l.acquire()
	if err != nil {
		t.Fatal(err)
	}
	segDir = h.segs.dir
	l.release(h)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, segDir
}

// relocatedBytes is what l's relocate copied since it opened.
func relocatedBytes(t *testing.T, l *Ledger) int64 {
	t.Helper()
	h, err := l.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer l.release(h)
	return h.segs.relocated
}

// TestPruneThroughSegmentsCopiesNothing: a prune that steps through the segments with
// one cutoff for every type copies no chunk out of them. The first build copied the
// held chunks of every segment the prune had half passed, which the next steps pruned
// anyway: in the soak a third of the segment bytes were such dead copies.
func TestPruneThroughSegmentsCopiesNothing(t *testing.T) {
	smallSegments(t)
	l := newLedger(t, true)
	k := newKeyLog(t)
	k.add(3*flushSeqs, 500, skuKeys(40), l)
	_, grown := segmentFiles(t, l)
	steps := k.prune(&storev1.PruneLedger{DefaultBelow: 2 * flushSeqs, MaxEvents: 300, ComputedAt: timestamppb.New(t0)}, l)
	if steps < 10 {
		t.Fatalf("the prune took %d steps; the test wants many, each ending inside a segment", steps)
	}
	if n := relocatedBytes(t, l); n != 0 {
		t.Fatalf("a prune with one cutoff copied %d bytes of chunks out of segments it was passing", n)
	}
	waitSegments(t, l, grown/2+2*segmentBytes)
}
