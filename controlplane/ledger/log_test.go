package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// chunkFirsts lists the first seq of every log chunk and its event count.
func chunkFirsts(t *testing.T, l *Ledger) (firsts []uint64, sizes []int) {
	t.Helper()
	err := l.viewLog(func(txn *logTxn) error {
		return scanLog(txn, 1, func(c *storev1.LogChunk) bool {
			firsts = append(firsts, c.GetFirstSeq())
			sizes = append(sizes, len(c.GetEvents()))
			return false
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return firsts, sizes
}

// TestLogChunkBoundaries checks where chunks close (by count and by bytes) and that
// every event stays readable by seq, by id and by commit time across the boundaries.
func TestLogChunkBoundaries(t *testing.T) {
	for _, disk := range []bool{false, true} {
		l := newLedger(t, disk)
		lg := &raftLog{t: t}
		var evs []*storev1.AgentEvent
		for i := range 600 {
			evs = append(evs, agentEvent(uint64(i+1), id("a1", i), "sku", fmt.Sprintf("S%d", i%3)))
		}
		lg.ingest(l, "a1", evs...) // index 1: seqs 1..600
		var big []*storev1.AgentEvent
		for i := range 5 {
			ae := agentEvent(uint64(601+i), id("a1", 600+i), "sku", "BIG")
			ae.Event.GetInventoryLevel().UnitOfMeasure = strings.Repeat("x", 100<<10)
			big = append(big, ae)
		}
		lg.ingest(l, "a1", big...) // index 2: seqs 601..605, 100 KiB each

		firsts, sizes := chunkFirsts(t, l)
		wantFirsts := []uint64{1, 257, 513, 601, 603, 605}
		wantSizes := []int{256, 256, 88, 2, 2, 1}
		if fmt.Sprint(firsts, sizes) != fmt.Sprint(wantFirsts, wantSizes) {
			t.Fatalf("chunks start at %v with %v events; want %v with %v", firsts, sizes, wantFirsts, wantSizes)
		}
		all := listAll(t, l, Filter{}, 1, 7)
		if len(all) != 605 {
			t.Fatalf("listed %d events, want 605", len(all))
		}
		for i, ev := range all {
			seq := uint64(i + 1)
			if ev.GetSeq() != seq || ev.GetAgentSeq() != seq || ev.GetAgent() != "a1" {
				t.Fatalf("event %d: seq %d agent %s/%d", i, ev.GetSeq(), ev.GetAgent(), ev.GetAgentSeq())
			}
			byID, ok, err := l.EventByID(ev.GetEvent().GetId())
			if err != nil || !ok || byID.GetSeq() != seq {
				t.Fatalf("EventByID(%s) = %v, %v, %v", ev.GetEvent().GetId(), byID, ok, err)
			}
			wantAt := at(1)
			if seq > 600 {
				wantAt = at(2)
			}
			if !ev.GetCommittedAt().AsTime().Equal(wantAt) {
				t.Fatalf("seq %d committed at %v, want %v", seq, ev.GetCommittedAt().AsTime(), wantAt)
			}
		}
		for _, tc := range []struct{ idx, want uint64 }{{0, 1}, {1, 1}, {2, 601}, {3, 606}} {
			if got, err := l.SeqAtTime(at(tc.idx)); err != nil || got != tc.want {
				t.Fatalf("SeqAtTime(at(%d)) = %d, %v; want %d", tc.idx, got, err, tc.want)
			}
		}
		if got := seqsOf(listAll(t, l, Filter{Keys: map[string]string{"sku": "BIG"}}, 602, 2)); fmt.Sprint(got) != "[602 603 604 605]" {
			t.Fatalf("sku=BIG from 602: %v", got)
		}
		testSnapshotRestore(t, l)
	}
}

// TestLayout1IsRefused checks that a database or snapshot written with the earlier
// one-record-per-event layout is refused with a reason instead of being misread.
func TestLayout1IsRefused(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1"))
	h, err := l.acquire()
	if err != nil {
		t.Fatal(err)
	}
	// Make it look like an earlier build's database: no layout record.
	if err := h.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyFormat) }); err != nil {
		t.Fatal(err)
	}
	l.release(h)
	stream := snapshotBytes(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "layout 1") {
		t.Fatalf("Open of a layout-1 ledger: %v, want ErrFormat naming layout 1", err)
	}
	fresh := newLedger(t, false)
	if err := fresh.Restore(bytes.NewReader(stream)); !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "layout") {
		t.Fatalf("Restore of a layout-1 snapshot: %v, want ErrSnapshotCorrupt naming the layout", err)
	}
}

// TestEarlierLayoutIsRefused: a database or snapshot of layout 2 (one key index record
// per key per chunk, no m/kflush) is refused with the versions named.
func TestEarlierLayoutIsRefused(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1", "sku", "S1"))
	h, err := l.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFormat, u64(2)) }); err != nil {
		t.Fatal(err)
	}
	l.release(h)
	stream := snapshotBytes(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("layout 2, this build reads layout %d", ledgerFormat)
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open of a layout-2 ledger: %v, want ErrFormat with %q", err, want)
	}
	fresh := newLedger(t, false)
	if err := fresh.Restore(bytes.NewReader(stream)); !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Restore of a layout-2 snapshot: %v, want ErrSnapshotCorrupt with %q", err, want)
	}
}
