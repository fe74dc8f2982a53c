package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func pruneCmd(t testing.TB, m *storev1.PruneLedger) *storev1.Command {
	return command(t, storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, m)
}

// prune applies m to every ledger in ls at the next index of lg until it reports no
// more, and returns the number of commands it took.
func (k *keyLog) prune(m *storev1.PruneLedger, ls ...*Ledger) (steps int) {
	k.lg.t.Helper()
	for {
		cmd := pruneCmd(k.lg.t, m)
		k.lg.cmds = append(k.lg.cmds, cmd)
		idx := uint64(len(k.lg.cmds))
		var more bool
		for _, l := range ls {
			res, err := l.Apply(idx, at(idx), cmd)
			if err != nil {
				k.lg.t.Fatalf("Apply prune %d: %v", idx, err)
			}
			r := res.(*storev1.PruneResult)
			if r.GetError() != "" {
				k.lg.t.Fatalf("prune refused: %s", r.GetError())
			}
			more = r.GetMore()
		}
		steps++
		if !more {
			return steps
		}
		if steps > 1000 {
			k.lg.t.Fatal("prune does not finish")
		}
	}
}

// held reports whether event seq of k is still in the ledger after cutoffs: orders
// below orderCut and other types below defCut are gone.
func (k *keyLog) held(seq, orderCut, defCut uint64) bool {
	if k.types[seq] == "order.created" {
		return seq >= orderCut
	}
	return seq >= defCut
}

// TestPruneSparseChunks: a prune that keeps orders longer than inventory levels leaves
// sparse chunks (every 7th event is an order); reads with and without filters return
// exactly the events held, reads below the cutoffs fail with ErrPruned naming the
// earliest seq and time held, EventByID finds kept events and reports pruned ones, and
// two ledgers, a restored snapshot and a reopened ledger have the same Hash.
func TestPruneSparseChunks(t *testing.T) {
	l1, l2 := newLedger(t, true), newLedger(t, false)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l1, l2)
	const orderCut, defCut = 5000, 20001
	k.prune(&storev1.PruneLedger{
		Types:        []*storev1.PruneCutoff{{Type: "order.created", Below: orderCut}},
		DefaultBelow: defCut, ComputedAt: timestamppb.New(t0),
	}, l1, l2)

	if got, want := mustHash(t, l1), mustHash(t, l2); got != want {
		t.Fatalf("ledgers that applied the same prune differ: %s vs %s", got, want)
	}
	low, lowAt := l1.LowWater()
	if low != orderCut || lowAt.IsZero() {
		t.Fatalf("LowWater = %d at %v, want %d and a time", low, lowAt, orderCut)
	}
	// A sparse chunk is there: the chunk holding seq 10000 lost its levels, kept orders.
	if err := l1.viewLog(func(txn *logTxn) error {
		first, err := chunkStart(txn, 10001)
		if err != nil {
			return err
		}
		c, ok, err := readChunk(txn, first)
		if err != nil || !ok {
			return fmt.Errorf("chunk %d: %v %v", first, ok, err)
		}
		if len(c.GetOffsets()) == 0 || len(c.GetOffsets()) != len(c.GetEvents()) {
			return fmt.Errorf("chunk %d is not sparse: %d offsets, %d events", first, len(c.GetOffsets()), len(c.GetEvents()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	filters := []Filter{{}, {Type: "order.created"}, {Keys: map[string]string{"location": "WH-1"}},
		{Type: "order.created", Keys: map[string]string{"sku": "SKU-3"}}, {Type: "inventory.level", Keys: map[string]string{"sku": "SKU-5"}}}
	for _, l := range []*Ledger{l1, l2} {
		for _, f := range filters {
			for _, from := range []uint64{0, orderCut, defCut, defCut + 1234, k.seq - 3} {
				if f.Type == "inventory.level" && from > 0 && from < defCut {
					continue
				}
				var want []uint64
				for _, s := range k.want(f, max(from, 1)) {
					if k.held(s, orderCut, defCut) {
						want = append(want, s)
					}
				}
				var got []uint64
				for _, ev := range listAll(t, l, f, from, 97) {
					got = append(got, ev.GetSeq())
					if ev.GetEvent().GetId() != fmt.Sprintf("ev-%d", ev.GetSeq()) {
						t.Fatalf("seq %d holds event %q", ev.GetSeq(), ev.GetEvent().GetId())
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("ListEvents(%v, from %d): %d events, want %d\ngot  %v\nwant %v", f, from, len(got), len(want), head(got), head(want))
				}
			}
		}
	}

	// Below the marks.
	_, _, err := l1.ListEvents(Filter{}, orderCut-1, 10)
	var pe *PrunedError
	if !errors.Is(err, ErrPruned) || !errors.As(err, &pe) {
		t.Fatalf("ListEvents below the low-water: %v, want ErrPruned", err)
	}
	firstHeld := uint64(orderCut)
	for !k.held(firstHeld, orderCut, defCut) {
		firstHeld++
	}
	if pe.Seq != firstHeld || !strings.Contains(err.Error(), fmt.Sprintf("seq %d, committed at", firstHeld)) || !strings.Contains(err.Error(), "committed at 2025-") {
		t.Fatalf("error does not name the earliest seq and time held: %v", err)
	}
	_, _, err = l1.ListEvents(Filter{Type: "inventory.level"}, defCut-100, 10)
	if !errors.As(err, &pe) || pe.Type != "inventory.level" || pe.Seq < defCut {
		t.Fatalf("ListEvents of levels below their cutoff: %v, want ErrPruned at %d", err, defCut)
	}

	// By id: an order kept in a sparse chunk, a level pruned from it, an event after.
	for _, tc := range []struct {
		seq  uint64
		held bool
	}{{7 * 1500, true}, {7*1500 + 1, false}, {7 * 500, false}, {defCut + 5, true}} {
		id := fmt.Sprintf("ev-%d", tc.seq)
		ev, ok, err := l1.EventByID(id)
		switch {
		case tc.held && (err != nil || !ok || ev.GetSeq() != tc.seq):
			t.Fatalf("EventByID(%s) = %v, %v, %v; want seq %d", id, ev.GetSeq(), ok, err, tc.seq)
		case !tc.held && !errors.Is(err, ErrPruned):
			t.Fatalf("EventByID(%s) of a pruned event: %v, %v; want ErrPruned", id, ok, err)
		}
	}
	if s, err := l1.SeqAtTime(t0); err != nil || s > firstHeld {
		t.Fatalf("SeqAtTime(before everything) = %d, %v; want at most %d", s, err, firstHeld)
	}

	// A restored snapshot and a reopened ledger are the same state.
	l3 := newLedger(t, false)
	if err := l3.Restore(bytes.NewReader(snapshotBytes(t, l1))); err != nil {
		t.Fatal(err)
	}
	h1 := mustHash(t, l1)
	if got := mustHash(t, l3); got != h1 {
		t.Fatal("a snapshot of a pruned ledger restores to another state")
	}
	dir := l1.opts.Dir
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	l4, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Close()
	if got := mustHash(t, l4); got != h1 {
		t.Fatal("a reopened pruned ledger has another state")
	}
	if s, _ := l4.LowWater(); s != orderCut {
		t.Fatalf("LowWater after reopen = %d, want %d", s, orderCut)
	}
}

// TestPruneNeverPassesFlushed: events after m/kflush (described by the in-memory
// pending lists and ids, which a restarted node rebuilds from the chunks) are kept
// whatever the cutoff, so a restarted node has the same state.
func TestPruneNeverPassesFlushed(t *testing.T) {
	l := newLedger(t, true)
	k := newKeyLog(t)
	k.add(flushSeqs+300, 500, skuKeys(40), l)
	_, flushed := keyRecords(t, l)
	k.prune(&storev1.PruneLedger{DefaultBelow: k.seq + 1}, l)
	if low, _ := l.LowWater(); low != flushed+1 {
		t.Fatalf("LowWater = %d, want m/kflush+1 = %d", low, flushed+1)
	}
	h := mustHash(t, l)
	dir := l.opts.Dir
	l.Close()
	l2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if mustHash(t, l2) != h {
		t.Fatal("reopened ledger differs")
	}
}

// TestPruneCompaction: for a compact type the newest pruned event per (type, keys) is
// kept for ScanCompacted, replaced by a newer one pruned later; other types are not.
func TestPruneCompaction(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	// Every 7th event is order.created; the others are levels of 40 SKUs at 3 locations.
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	// Every event as read before the prunes: a compacted event must be equal to it
	// (content, commit time, agent and agent seq), written from the chunk's bytes.
	all, _, err := l.ListEvents(Filter{}, 0, 1<<20)
	if err != nil || len(all) != int(k.seq) {
		t.Fatalf("ListEvents: %d events, %v", len(all), err)
	}
	newest := func(below uint64) map[string]uint64 {
		out := map[string]uint64{}
		for s := uint64(1); s < below; s++ {
			if k.types[s] == "inventory.level" {
				out[k.keys[s]["sku"]+"/"+k.keys[s]["location"]] = s
			}
		}
		return out
	}
	check := func(below uint64) {
		t.Helper()
		got := map[string]uint64{}
		err := l.ScanCompacted([]string{"inventory.level", "order.created"}, func(ev *eventv1.CommittedEvent) error {
			if ev.GetEvent().GetType() != "inventory.level" {
				return fmt.Errorf("compacted a %s event", ev.GetEvent().GetType())
			}
			key := ev.GetEvent().GetKeys()["sku"] + "/" + ev.GetEvent().GetKeys()["location"]
			if _, dup := got[key]; dup {
				return fmt.Errorf("two compacted events for %s", key)
			}
			if ev.GetSeq() == 0 || ev.GetSeq() > k.seq || !proto.Equal(ev, all[ev.GetSeq()-1]) {
				return fmt.Errorf("compacted event %v, the log held %v", ev, all[min(max(ev.GetSeq(), 1), k.seq)-1])
			}
			got[key] = ev.GetSeq()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := newest(below)
		if len(got) != len(want) {
			t.Fatalf("%d compacted keys, want %d", len(got), len(want))
		}
		for key, s := range want {
			if got[key] != s {
				t.Fatalf("compacted %s is seq %d, want the newest pruned, %d", key, got[key], s)
			}
		}
	}
	k.prune(&storev1.PruneLedger{DefaultBelow: 3000, Compact: []string{"inventory.level"}}, l)
	check(3000)
	k.prune(&storev1.PruneLedger{DefaultBelow: 20000, Compact: []string{"inventory.level"}}, l)
	check(20000)
}

// TestFilterRebuiltOnceStale: a prune that drops id runs rebuilds the ledger-wide
// filter only once the dropped ids it still holds are half of what the ledger holds,
// not at every prune (with a dedup window as short as the prune interval that was a
// read of the whole window's ids on every node at every interval).
func TestFilterRebuiltOnceStale(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(7*flushSeqs, 500, skuKeys(40), l)
	p := l.cur.post
	if len(p.runs) < 6 {
		t.Fatalf("%d runs, want at least 6", len(p.runs))
	}
	held := p.heldIDs
	before := p.filter
	// The first run dropped: a sixth or less of what is held, the filter stays.
	n0 := p.runs[0].n
	k.prune(&storev1.PruneLedger{DedupBelow: p.runs[0].last + 1}, l)
	if p.grow != nil || p.filter != before || p.droppedIDs != n0 || 2*n0 >= held() {
		t.Fatalf("after dropping one run: build %v, filter replaced %v, %d dropped ids of %d held; want none, false, %d",
			p.grow != nil, p.filter != before, p.droppedIDs, held(), n0)
	}
	// Then runs until the dropped ones are half of what is held: rebuilt.
	dropped := n0
	for 2*dropped < held()-p.runs[0].n {
		dropped += p.runs[0].n
		k.prune(&storev1.PruneLedger{DedupBelow: p.runs[0].last + 1}, l)
		if p.grow != nil || p.filter != before {
			t.Fatalf("rebuilt with %d dropped ids of %d held", dropped, held())
		}
	}
	k.prune(&storev1.PruneLedger{DedupBelow: p.runs[0].last + 1}, l)
	if p.grow == nil {
		t.Fatalf("not rebuilt with %d dropped ids of %d held", p.droppedIDs, held())
	}
	testutil.WaitFor(t, 10*time.Second, "id filter rebuilt", func() bool {
		l.applyMu.Lock()
		defer l.applyMu.Unlock()
		l.growFilter(l.cur, false)
		return p.grow == nil && p.filter != before
	})
	if p.droppedIDs != 0 || p.filter.n > held()+100 {
		t.Fatalf("rebuilt filter holds %d ids, %d dropped ones counted; want at most the %d held, none", p.filter.n, p.droppedIDs, held())
	}
}

// TestPruneDedupWindow: id runs below the dedup cutoff are deleted, so an id committed
// before it is no longer a duplicate; an id after it is, even when its event was pruned
// (ids outlive events); the ledger-wide filter is rebuilt without the dropped runs.
func TestPruneDedupWindow(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	p := l.cur.post
	if len(p.runs) != 2 {
		t.Fatalf("%d runs, want 2", len(p.runs))
	}
	firstRun := p.runs[0].last
	// Events up to 20000 go; ids below the first run's end + 1 are forgotten.
	k.prune(&storev1.PruneLedger{DefaultBelow: 20000, DedupBelow: firstRun + 1}, l)
	if len(p.runs) != 1 {
		t.Fatalf("%d runs after the prune, want 1", len(p.runs))
	}
	// The filter rebuilt in the background, without the first run's ids.
	testutil.WaitFor(t, 10*time.Second, "id filter rebuilt", func() bool {
		l.applyMu.Lock()
		defer l.applyMu.Unlock()
		l.growFilter(l.cur, false)
		return p.grow == nil && p.filter.n < int(k.seq)-int(firstRun)+100
	})

	resend := func(seq uint64) *storev1.IngestResult {
		k.seq++
		ae := agentEvent(k.seq, fmt.Sprintf("ev-%d", seq), skuKeys(40)(seq)...)
		if seq%7 == 0 {
			ae = withType(ae, "order.created")
		}
		return k.lg.ingest(l, "a1", ae)
	}
	// Older than the window: committed again.
	if r := resend(100); r.GetCommitted() != 1 || r.GetDuplicates() != 0 {
		t.Fatalf("an id older than the dedup window: %d committed, %d duplicates; want 1, 0", r.GetCommitted(), r.GetDuplicates())
	}
	// Within the window, event pruned: a duplicate (not an error, not committed).
	if r := resend(firstRun + 10); r.GetCommitted() != 0 || r.GetDuplicates() != 1 {
		t.Fatalf("an id within the window whose event was pruned: %d committed, %d duplicates; want 0, 1", r.GetCommitted(), r.GetDuplicates())
	}
	// Within the window, event held.
	if r := resend(k.seq - 5); r.GetCommitted() != 0 || r.GetDuplicates() != 1 {
		t.Fatalf("an id within the window: %d committed, %d duplicates; want 0, 1", r.GetCommitted(), r.GetDuplicates())
	}
	lw, _ := l.Retention()
	if lw.GetDedupSeq() != firstRun+1 || lw.GetRunsPruned() != 1 {
		t.Fatalf("m/low dedup %d, runs pruned %d; want %d, 1", lw.GetDedupSeq(), lw.GetRunsPruned(), firstRun+1)
	}
}

// TestPruneInSteps: a prune larger than one command's limit goes in several commands,
// each reporting more until done, and ends in the same state as one command.
func TestPruneInSteps(t *testing.T) {
	// With logChunksSpan 1 each step lists one chunk below the global low-water and
	// goes on from the next (the limit path); the result must not change.
	for _, span := range []uint64{logChunksSpan, 1} {
		t.Run(fmt.Sprintf("span%d", span), func(t *testing.T) {
			defer func(v uint64) { logChunksSpan = v }(logChunksSpan)
			logChunksSpan = span
			l1, l2 := newLedger(t, false), newLedger(t, false)
			k := newKeyLog(t)
			k.add(2*flushSeqs+300, 500, skuKeys(40), l1, l2)
			cut := &storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "order.created", Below: 9000}}, DefaultBelow: 30000,
				Compact: []string{"inventory.level"}, DedupBelow: 20000, ComputedAt: timestamppb.New(t0), MaxEvents: 2000}
			// The key index sweep, too, goes in steps: 7 records each.
			defer func(v int) { sweepStepKeys = v }(sweepStepKeys)
			sweepStepKeys = 7
			if recs, _ := keyRecords(t, l1); recs < 3*sweepStepKeys {
				t.Fatalf("%d key index records: too few for a sweep in steps", recs)
			}
			if n := k.prune(cut, l1); n < 10 {
				t.Fatalf("a prune of about 27,000 events by 2,000 took %d commands", n)
			}
			if m := lowWaterRecord(t, l1); m.GetSeq() == 0 || m.GetSweepLooked() != 0 || m.GetResume() != 0 {
				t.Fatalf("a prune that said no more left no mark, a sweep or a resume point: %v", m)
			}
			sweepStepKeys = 1 << 30
			// The same prune in one command (the step limit raised for it), applied at
			// the index the last step had.
			defer func(v int) { pruneMaxEvents = v }(pruneMaxEvents)
			pruneMaxEvents = 50_000
			logChunksSpan = 1 << 40
			one := &storev1.PruneLedger{Types: cut.Types, DefaultBelow: cut.DefaultBelow, Compact: cut.Compact, DedupBelow: cut.DedupBelow, ComputedAt: cut.ComputedAt}
			idx := uint64(len(k.lg.cmds))
			res, err := l2.Apply(idx, at(idx), pruneCmd(t, one))
			if err != nil || res.(*storev1.PruneResult).GetMore() {
				t.Fatalf("the same prune in one command: %v, %v", res, err)
			}
			if mustHash(t, l1) != mustHash(t, l2) {
				t.Fatal("a prune in steps ends in another state than in one command")
			}
			if _, _, err := l1.ListEvents(Filter{}, 8999, 1); !errors.Is(err, ErrPruned) {
				t.Fatalf("below the low-water after steps: %v", err)
			}
		})
	}
}

// lowWaterRecord reads l's m/low (empty when nothing was pruned).
func lowWaterRecord(t *testing.T, l *Ledger) *storev1.LowWater {
	t.Helper()
	var lw *storev1.LowWater
	if err := l.view(func(txn *badger.Txn) (err error) { lw, err = loadLowWater(txn); return err }); err != nil {
		t.Fatal(err)
	}
	if lw == nil {
		return &storev1.LowWater{}
	}
	return lw
}

// recordingArchiver records what it is given; fail makes it fail (fault injection).
type recordingArchiver struct {
	mu   sync.Mutex
	l    *Ledger
	seqs []uint64
	held int // events of the batch the ledger still held when Archive was called
	fail error
}

func (a *recordingArchiver) Archive(_ context.Context, evs []*eventv1.CommittedEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	for _, ev := range evs {
		a.seqs = append(a.seqs, ev.GetSeq())
		if got, _, err := a.l.ListEvents(Filter{}, ev.GetSeq(), 1); err == nil && len(got) == 1 && got[0].GetSeq() == ev.GetSeq() {
			a.held++
		}
	}
	return nil
}

// TestPruneArchives: the Archiver gets exactly the pruned events, in seq order, while
// the ledger still holds them; a failing Archiver fails the Apply and nothing changes.
func TestPruneArchives(t *testing.T) {
	arc := &recordingArchiver{}
	l, err := Open(Options{InMemory: true, Archiver: arc})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	arc.l = l
	k := newKeyLog(t)
	k.add(flushSeqs+300, 500, skuKeys(40), l)

	arc.fail = errors.New("disk full")
	before := mustHash(t, l)
	cmd := pruneCmd(t, &storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "order.created", Below: 100}}, DefaultBelow: 1000})
	if _, err := l.Apply(uint64(len(k.lg.cmds)+1), at(1), cmd); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Apply with a failing archiver: %v, want its error", err)
	}
	if mustHash(t, l) != before {
		t.Fatal("a failed archive changed the ledger")
	}
	arc.fail = nil
	k.prune(&storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "order.created", Below: 100}}, DefaultBelow: 1000}, l)
	var want []uint64
	for s := uint64(1); s < 1000; s++ {
		if k.held(s, 100, 1000) {
			continue
		}
		want = append(want, s)
	}
	if !slices.Equal(arc.seqs, want) {
		t.Fatalf("archived %d events %v..., want %d %v...", len(arc.seqs), head(arc.seqs), len(want), head(want))
	}
	if arc.held != len(want) {
		t.Fatalf("%d of %d events were still readable when archived", arc.held, len(want))
	}
}

// TestOpenUpgradesLayout5: a layout 5 database is valid layout 6; Open records 6.
func TestOpenUpgradesLayout5(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := newKeyLog(t)
	k.add(300, 100, skuKeys(4), l)
	h, _ := l.acquire()
	if err := h.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFormat, u64(5)) }); err != nil {
		t.Fatal(err)
	}
	l.release(h)
	l.Close()
	l, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open of a layout 5 database: %v", err)
	}
	defer l.Close()
	var v uint64
	if err := l.view(func(txn *badger.Txn) error {
		var err error
		v, err = getU64(txn, keyFormat)
		return err
	}); err != nil || v != ledgerFormat {
		t.Fatalf("layout after Open = %d (%v), want %d", v, err, ledgerFormat)
	}
	if evs, _, err := l.ListEvents(Filter{}, 1, 1000); err != nil || len(evs) != 300 {
		t.Fatalf("events after upgrade: %d, %v", len(evs), err)
	}
}

// TestPruneRefusesUnsortedTypes: invalid cutoffs are a refusal, nothing changes.
func TestPruneRefusesUnsortedTypes(t *testing.T) {
	l := newLedger(t, false)
	lg := raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1"))
	res := lg.apply(l, pruneCmd(t, &storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "b", Below: 2}, {Type: "a", Below: 2}}}))
	if r := res.(*storev1.PruneResult); !strings.Contains(r.GetError(), "sorted") {
		t.Fatalf("result %v, want a refusal", r)
	}
	if lw, _ := l.Retention(); lw != nil {
		t.Fatalf("a refused prune wrote m/low: %v", lw)
	}
}

// TestPruneByteBudgetSteps: a prune whose events exceed what one command may hand the
// archiver goes in steps (here with the limit lowered to 256 KiB) and ends in the same
// state as one command.
func TestPruneByteBudgetSteps(t *testing.T) {
	defer func(v, e int) { pruneMaxArchived, pruneMaxEvents = v, e }(pruneMaxArchived, pruneMaxEvents)
	l1, l2 := newLedger(t, false), newLedger(t, false)
	k := newKeyLog(t)
	k.add(flushSeqs+300, 500, skuKeys(40), l1, l2)
	m := &storev1.PruneLedger{DefaultBelow: 15000, ComputedAt: timestamppb.New(t0)}
	pruneMaxArchived = 256 << 10
	if n := k.prune(m, l1); n < 5 {
		t.Fatalf("a prune of 15,000 events under a 256 KiB limit took %d commands", n)
	}
	pruneMaxArchived, pruneMaxEvents = 32<<20, 50_000
	idx := uint64(len(k.lg.cmds))
	if res, err := l2.Apply(idx, at(idx), pruneCmd(t, m)); err != nil || res.(*storev1.PruneResult).GetMore() {
		t.Fatalf("one command: %v %v", res, err)
	}
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("steps by bytes end in another state than one command")
	}
}

// TestPruneStepsAlwaysProgress: a limit below one chunk's events still removes a chunk
// per command, so a prune in steps always finishes.
func TestPruneStepsAlwaysProgress(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(flushSeqs+300, 500, skuKeys(40), l)
	if n := k.prune(&storev1.PruneLedger{DefaultBelow: 2000, MaxEvents: 10}, l); n < 2 {
		t.Fatalf("took %d commands", n)
	}
	if low, _ := l.LowWater(); low != 2000 {
		t.Fatalf("LowWater %d, want 2000", low)
	}
}

// TestDedupCutoffAfterPrune: the dedup cutoff for a time comes from the id runs' commit
// times, so it is right after retention removed the runs' events (SeqAtTime would put
// it at the earliest event held) and after a reopen.
func TestDedupCutoffAfterPrune(t *testing.T) {
	l := newLedger(t, true)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	runs := slices.Clone(l.cur.post.runs)
	if len(runs) != 2 || runs[0].at == 0 {
		t.Fatalf("runs %v without commit times", runs)
	}
	k.prune(&storev1.PruneLedger{DefaultBelow: runs[1].last + 1}, l)
	check := func(l *Ledger) {
		t.Helper()
		for _, tc := range []struct {
			at   time.Time
			want uint64
		}{{t0, 1}, {time.Unix(0, runs[0].at), 1}, {time.Unix(0, runs[0].at+1), runs[0].last + 1}, {time.Unix(0, runs[1].at+1), runs[1].last + 1}} {
			if got, err := l.DedupCutoff(tc.at); err != nil || got != tc.want {
				t.Fatalf("DedupCutoff(%v) = %d, %v; want %d", tc.at, got, err, tc.want)
			}
		}
	}
	check(l)
	dir := l.opts.Dir
	l.Close()
	l2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	check(l2)
}

// countingStore counts the objects written to a real archive directory (to show the
// prune's Apply writes nothing once ArchiveAhead ran).
type countingStore struct {
	archive.DirStore
	puts atomic.Int64
}

func (s *countingStore) Put(ctx context.Context, name string, r io.Reader) error {
	s.puts.Add(1)
	return s.DirStore.Put(ctx, name, r)
}

// archivedInMemory opens an in-memory ledger, closed when the test ends, that archives to
// a directory archive whose puts st counts.
func archivedInMemory(t *testing.T) (*Ledger, *archive.Dir, *countingStore) {
	t.Helper()
	st := &countingStore{DirStore: archive.DirStore{Root: t.TempDir()}}
	arc := archive.New(st)
	l, err := Open(Options{InMemory: true, Archiver: arc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, arc, st
}

// TestArchiveAheadThenPrune: ArchiveAhead (in batches) archives exactly the events the
// prune will remove, without changing the ledger; the prune's Apply then finds them
// archived and writes nothing to the archive; every pruned event is in it once.
func TestArchiveAheadThenPrune(t *testing.T) {
	l, arc, st := archivedInMemory(t)
	k := newKeyLog(t)
	k.add(flushSeqs+300, 500, skuKeys(40), l)
	m := &storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "order.created", Below: 100}}, DefaultBelow: 1000}
	var want []uint64
	for s := uint64(1); s < 1000; s++ {
		if !k.held(s, 100, 1000) {
			want = append(want, s)
		}
	}
	before := mustHash(t, l)
	ctx := context.Background()
	total, batches := 0, 0
	for {
		n, more, err := l.ArchiveAhead(ctx, arc, m, 300)
		if err != nil {
			t.Fatal(err)
		}
		total, batches = total+n, batches+1
		if !more {
			break
		}
	}
	if total != len(want) || batches < 2 {
		t.Fatalf("ArchiveAhead archived %d events in %d batches, want %d in several", total, batches, len(want))
	}
	if mustHash(t, l) != before {
		t.Fatal("ArchiveAhead changed the ledger")
	}
	if n, _, err := l.ArchiveAhead(ctx, arc, m, 300); err != nil || n != 0 {
		t.Fatalf("ArchiveAhead again: %d events, %v; want none", n, err)
	}
	puts := st.puts.Load()
	k.prune(m, l)
	if got := st.puts.Load(); got != puts {
		t.Fatalf("the prune's Apply wrote %d archive objects after ArchiveAhead, want none", got-puts)
	}
	if low, _ := l.LowWater(); low != 100 {
		t.Fatalf("LowWater %d, want 100", low)
	}
	it, err := arc.Events(ctx, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for {
		ev, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.GetSeq())
	}
	lst, err := arc.List(ctx, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var stored uint64
	for _, f := range lst.Files {
		stored += f.Events
	}
	if !slices.Equal(got, want) || stored != uint64(len(want)) {
		t.Fatalf("archive holds %d events (%d stored) %v..., want %d %v...", len(got), stored, head(got), len(want), head(want))
	}
}

// TestPruneSameWhateverTheArchiveHolds: a prune step decodes and archives only the
// events its node's archive lacks, so what it decides (where a step stops, what goes)
// must not depend on that: three ledgers whose archives hold all,
// part and none of the events to prune end each step with the same Hash, and each
// archive then holds every pruned event once.
func TestPruneSameWhateverTheArchiveHolds(t *testing.T) {
	type node struct {
		l   *Ledger
		arc *archive.Dir
		st  *countingStore
	}
	var nodes []node
	for range 3 {
		l, arc, st := archivedInMemory(t)
		nodes = append(nodes, node{l, arc, st})
	}
	// The byte budget, too, cuts steps (it counts every event going, decoded or not).
	defer func(v int) { pruneMaxArchived = v }(pruneMaxArchived)
	pruneMaxArchived = 64 << 10
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), nodes[0].l, nodes[1].l, nodes[2].l)
	m := &storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "order.created", Below: 9000}}, DefaultBelow: 30000,
		Compact: []string{"order.created"}, MaxEvents: 2000}
	ctx := context.Background()
	for { // all of them
		if _, more, err := nodes[0].l.ArchiveAhead(ctx, nodes[0].arc, m, 5000); err != nil {
			t.Fatal(err)
		} else if !more {
			break
		}
	}
	if _, _, err := nodes[1].l.ArchiveAhead(ctx, nodes[1].arc, m, 7000); err != nil { // part
		t.Fatal(err)
	}
	puts := nodes[0].st.puts.Load()
	steps := 0
	for more := true; more; steps++ {
		cmd := pruneCmd(t, m)
		k.lg.cmds = append(k.lg.cmds, cmd)
		idx := uint64(len(k.lg.cmds))
		var results []string
		for _, n := range nodes {
			res, err := n.l.Apply(idx, at(idx), cmd)
			if err != nil {
				t.Fatalf("step %d: %v", steps, err)
			}
			more = res.(*storev1.PruneResult).GetMore()
			results = append(results, fmt.Sprint(res))
		}
		h0, h1, h2 := mustHash(t, nodes[0].l), mustHash(t, nodes[1].l), mustHash(t, nodes[2].l)
		if h0 != h1 || h0 != h2 || results[0] != results[1] || results[0] != results[2] {
			t.Fatalf("step %d: ledgers whose archives held all, part and none of the events differ: results %v", steps, results)
		}
	}
	if steps < 10 {
		t.Fatalf("the prune took %d steps, want many", steps)
	}
	if got := nodes[0].st.puts.Load(); got != puts {
		t.Fatalf("the node whose archive held every event wrote %d archive objects while pruning", got-puts)
	}
	var want []uint64
	for s := uint64(1); s < 30000; s++ {
		if !k.held(s, 9000, 30000) {
			want = append(want, s)
		}
	}
	for i, n := range nodes {
		lst, err := n.arc.List(ctx, archive.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var stored uint64
		for _, f := range lst.Files {
			stored += f.Events
		}
		if stored != uint64(len(want)) {
			t.Fatalf("archive %d holds %d events, want the %d pruned", i, stored, len(want))
		}
	}
}

// keyRecordsBelow counts the key index records (k/) and those whose last chunk is below
// below.
func keyRecordsBelow(t *testing.T, l *Ledger, below uint64) (all, stale int) {
	t.Helper()
	if err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = prefixKey, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			all++
			if seqSuffix(it.Item().Key()) < below {
				stale++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all, stale
}

// TestPruneDeletesKeyRecords: the key index records of pruned chunks are deleted by the
// prune (in turns of sweepMaxKeys records, resumed by the next prune), the same on two
// ledgers, and reads by key still return exactly the events held.
func TestPruneDeletesKeyRecords(t *testing.T) {
	defer func(v int) { sweepMaxKeys = v }(sweepMaxKeys)
	sweepMaxKeys = 20
	l1, l2 := newLedger(t, false), newLedger(t, false)
	k := newKeyLog(t)
	k.add(3*flushSeqs+300, 500, skuKeys(40), l1, l2)
	cut := uint64(2*flushSeqs + 5)
	all0, stale0 := keyRecordsBelow(t, l1, cut)
	if stale0 < 2*sweepMaxKeys {
		t.Fatalf("only %d of %d key records below seq %d: the test needs more", stale0, all0, cut)
	}
	k.prune(&storev1.PruneLedger{DefaultBelow: cut}, l1, l2)
	if _, stale := keyRecordsBelow(t, l1, cut); stale == 0 || stale == stale0 {
		t.Fatalf("after one prune %d stale key records of %d: want some deleted, at most %d per prune", stale, stale0, sweepMaxKeys)
	}
	var below uint64
	for range 2*stale0/sweepMaxKeys + 2 { // later prunes resume the sweep
		k.prune(&storev1.PruneLedger{DefaultBelow: cut}, l1, l2)
		if err := l1.viewLog(func(txn *logTxn) (err error) { below, err = chunkStart(txn, cut); return err }); err != nil {
			t.Fatal(err)
		}
	}
	all, stale := keyRecordsBelow(t, l1, below)
	if stale != 0 || all >= all0 {
		t.Fatalf("key records: %d, %d below the first chunk held (%d); before the prune %d", all, stale, below, all0)
	}
	if mustHash(t, l1) != mustHash(t, l2) {
		t.Fatal("two ledgers swept their key index differently")
	}
	evs, _, err := l1.ListEvents(Filter{Keys: map[string]string{"sku": "SKU-3"}}, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for s := cut; s <= k.seq; s++ {
		if k.keys[s]["sku"] == "SKU-3" {
			want++
		}
	}
	if len(evs) != want || len(evs) == 0 || evs[0].GetSeq() < cut {
		t.Fatalf("sku=SKU-3 after the sweep: %d events, want %d from seq %d", len(evs), want, cut)
	}
}

// TestArchiveAheadSparseType: with listings bounded to a step's span, a type with one
// event in thousands still makes ArchiveAhead progress (each call lists at least one of
// its chunks at or after where it stands) and the calls end with every event below the
// cutoff archived once; a prune in steps bounded the same way removes exactly them.
func TestArchiveAheadSparseType(t *testing.T) {
	defer func(v uint64) { logChunksSpan = v }(logChunksSpan)
	logChunksSpan = 1
	l, arc, st := archivedInMemory(t)
	const n, every, cut = 20_000, 1_500, 15_000 // the index holds what is flushed (flushSeqs)
	var idx uint64
	for seq := uint64(1); seq <= n; seq += 500 {
		evs := make([]*storev1.AgentEvent, 500)
		for j := range evs {
			s := seq + uint64(j)
			evs[j] = agentEvent(s, fmt.Sprintf("ev-%d", s), "sku", fmt.Sprintf("S-%d", s%40))
			if s%every == 0 {
				evs[j] = withType(evs[j], "rare.event")
			}
		}
		idx++
		if _, err := l.Apply(idx, at(idx), ingestCmd(t, "a1", evs...)); err != nil {
			t.Fatal(err)
		}
	}
	m := &storev1.PruneLedger{DefaultBelow: cut, MaxEvents: 200}
	ctx := context.Background()
	total := 0
	for calls := 0; ; calls++ {
		if calls > 1000 {
			t.Fatalf("ArchiveAhead still has more after %d calls (%d events archived)", calls, total)
		}
		got, more, err := l.ArchiveAhead(ctx, arc, m, 200)
		if err != nil {
			t.Fatal(err)
		}
		total += got
		if !more {
			break
		}
	}
	if total != cut-1 {
		t.Fatalf("ArchiveAhead archived %d events, want %d", total, cut-1)
	}
	puts := st.puts.Load()
	for steps := 0; ; steps++ {
		if steps > 1000 {
			t.Fatal("the prune does not finish")
		}
		idx++
		res, err := l.Apply(idx, at(idx), pruneCmd(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if !res.(*storev1.PruneResult).GetMore() {
			break
		}
	}
	if got := st.puts.Load(); got != puts {
		t.Fatalf("the prune wrote %d archive objects after ArchiveAhead, want none", got-puts)
	}
	if low, _ := l.LowWater(); low != cut {
		t.Fatalf("LowWater %d, want %d", low, cut)
	}
	if evs, _, err := l.ListEvents(Filter{Type: "rare.event"}, cut, 10); err != nil || len(evs) == 0 || evs[0].GetSeq() != cut {
		t.Fatalf("rare events held: %v, %v; want them from 15000", evs, err)
	}
}
