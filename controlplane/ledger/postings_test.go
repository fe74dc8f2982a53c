package ledger

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// keyLog is a workload for the key index: batches of events whose keys are chosen by
// key(i) for the i-th event (1-based), with what was sent kept for checking.
type keyLog struct {
	lg    raftLog
	seq   uint64
	keys  map[uint64]map[string]string // event n (= its ledger seq: no duplicates) -> keys
	types map[uint64]string
}

func newKeyLog(t testing.TB) *keyLog {
	return &keyLog{lg: raftLog{t: t}, keys: map[uint64]map[string]string{}, types: map[uint64]string{}}
}

// add ingests n events in batches of batch into every ledger in ls.
func (k *keyLog) add(n, batch int, key func(i uint64) []string, ls ...*Ledger) {
	for n > 0 {
		b := min(n, batch)
		evs := make([]*storev1.AgentEvent, b)
		for j := range evs {
			k.seq++
			evs[j] = agentEvent(k.seq, fmt.Sprintf("ev-%d", k.seq), key(k.seq)...)
			if k.seq%7 == 0 {
				evs[j] = withType(evs[j], "order.created")
			}
			k.keys[k.seq] = evs[j].Event.Keys
			k.types[k.seq] = evs[j].Event.Type
		}
		cmd := ingestCmd(k.lg.t, "a1", evs...)
		k.lg.cmds = append(k.lg.cmds, cmd)
		idx := uint64(len(k.lg.cmds))
		for _, l := range ls {
			res, err := l.Apply(idx, at(idx), cmd)
			if err != nil {
				k.lg.t.Fatalf("Apply %d: %v", idx, err)
			}
			if got := res.(*storev1.IngestResult).GetCommitted(); got != uint32(b) {
				k.lg.t.Fatalf("Apply %d committed %d of %d", idx, got, b)
			}
		}
		n -= b
	}
}

// want lists the seqs of the events matching f, from seq from.
func (k *keyLog) want(f Filter, from uint64) []uint64 {
	var out []uint64
	for s := from; s <= k.seq; s++ {
		if f.Type != "" && k.types[s] != f.Type {
			continue
		}
		ok := true
		for n, v := range f.Keys {
			if k.keys[s][n] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// check compares ListEvents with what was sent for filters fs, from several seqs and
// page sizes.
func (k *keyLog) check(t *testing.T, l *Ledger, fs ...Filter) {
	t.Helper()
	for _, f := range fs {
		for _, from := range []uint64{1, k.seq / 3, k.seq - 5} {
			want := k.want(f, from)
			for _, page := range []int{1000, 37} {
				var got []uint64
				for _, ev := range listAll(t, l, f, from, page) {
					got = append(got, ev.GetSeq())
					if ev.GetEvent().GetId() != fmt.Sprintf("ev-%d", ev.GetSeq()) {
						t.Fatalf("seq %d holds event %q", ev.GetSeq(), ev.GetEvent().GetId())
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("ListEvents(%v, from %d, page %d): %d events, want %d\ngot  %v\nwant %v", f, from, page, len(got), len(want), head(got), head(want))
				}
			}
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 20)] }

// keyRecords counts the flushed k/ records and reads m/kflush.
func keyRecords(t *testing.T, l *Ledger) (records int, flushed uint64) {
	t.Helper()
	err := l.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixKey})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			records++
		}
		var err error
		flushed, err = getU64(txn, keyKeyFlushed)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, flushed
}

func skuKeys(skus uint64) func(i uint64) []string {
	return func(i uint64) []string {
		return []string{"sku", fmt.Sprintf("SKU-%d", (i*7919)%skus), "location", fmt.Sprintf("WH-%d", i%3)}
	}
}

// TestKeyIndexFlushesBySeqs: a few hundred SKUs over 2.5 flush spans; queries see
// flushed records and pending lists alike, and the records were written per span.
func TestKeyIndexFlushesBySeqs(t *testing.T) {
	l := newLedger(t, true)
	k := newKeyLog(t)
	k.add(flushSeqs*5/2, 500, skuKeys(300), l)
	recs, flushed := keyRecords(t, l)
	if flushed < 2*flushSeqs || flushed >= k.seq {
		t.Fatalf("m/kflush = %d after %d events; want two spans flushed and some pending", flushed, k.seq)
	}
	// Two flushes of 300 SKUs and 3 locations.
	if recs != 2*303 {
		t.Fatalf("%d key index records; want %d (one per key per flush)", recs, 2*303)
	}
	k.check(t, l,
		Filter{Keys: map[string]string{"sku": "SKU-17"}},
		Filter{Keys: map[string]string{"sku": "SKU-17", "location": "WH-2"}},
		Filter{Keys: map[string]string{"location": "WH-1"}, Type: "order.created"},
		Filter{Keys: map[string]string{"sku": "SKU-299"}, Type: "inventory.level"},
		Filter{Keys: map[string]string{"sku": "SKU-300"}},
		Filter{Keys: map[string]string{"sku": "SKU-17", "location": "WH-9"}},
	)
}

// TestKeyIndexFlushesByKeysAndBytes: every event a new key (the distinct-key threshold)
// and long values (the byte threshold) flush before the seq span does.
func TestKeyIndexFlushesByKeysAndBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(i uint64) []string
	}{
		{"keys", func(i uint64) []string {
			return []string{"order", fmt.Sprintf("SO-%d", i), "line", fmt.Sprintf("L-%d", i), "location", "WH-1"}
		}},
		{"bytes", func(i uint64) []string {
			return []string{"note", fmt.Sprintf("%d-%s", i, strings.Repeat("n", 900)), "location", "WH-1"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t, false)
			k := newKeyLog(t)
			k.add(flushSeqs-100, 250, tc.key, l)
			recs, flushed := keyRecords(t, l)
			if flushed == 0 || recs == 0 {
				t.Fatalf("no flush before the seq span (records %d, m/kflush %d)", recs, flushed)
			}
			if p := l.cur.post; len(p.lists) >= flushKeys || p.size >= flushBytes {
				t.Fatalf("pending lists over a threshold at rest: %d keys, %d bytes", len(p.lists), p.size)
			}
			name := tc.key(1)[0]
			k.check(t, l,
				Filter{Keys: map[string]string{name: tc.key(5)[1]}},
				Filter{Keys: map[string]string{name: tc.key(flushed)[1]}},
				Filter{Keys: map[string]string{name: tc.key(flushed + 1)[1]}},
				Filter{Keys: map[string]string{name: tc.key(k.seq)[1], "location": "WH-1"}},
				Filter{Keys: map[string]string{"location": "WH-1"}, Type: "order.created"},
			)
		})
	}
}

// TestKeyIndexSurvivesReopenAndRestore: a ledger reopened or restored with pending
// lists rebuilds them from its chunks, answers the same, and goes on to write the same
// records as a ledger that never stopped (same Hash after every entry).
func TestKeyIndexSurvivesReopenAndRestore(t *testing.T) {
	dir := t.TempDir()
	ref := newLedger(t, false)
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	k := newKeyLog(t)
	filters := []Filter{
		{Keys: map[string]string{"sku": "SKU-5"}},
		{Keys: map[string]string{"sku": "SKU-100", "location": "WH-0"}},
	}
	for round := range 5 {
		k.add(flushSeqs/3+round*111, 400, skuKeys(500), ref, l)
		if got, want := mustHash(t, l), mustHash(t, ref); got != want {
			t.Fatalf("round %d: hash differs from the reference before reopening", round)
		}
		if round%2 == 0 {
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = Open(Options{Dir: dir}); err != nil {
				t.Fatal(err)
			}
		} else if err := l.Restore(bytes.NewReader(snapshotBytes(t, ref))); err != nil {
			t.Fatal(err)
		}
		if got, want := mustHash(t, l), mustHash(t, ref); got != want {
			t.Fatalf("round %d: hash differs from the reference after reopen/restore", round)
		}
		if a, b := l.cur.post, ref.cur.post; a.flushed != b.flushed || a.size != b.size || len(a.lists) != len(b.lists) {
			t.Fatalf("round %d: rebuilt pending lists (m/kflush %d, %d keys, %d bytes) differ from the reference's (%d, %d, %d)",
				round, a.flushed, len(a.lists), a.size, b.flushed, len(b.lists), b.size)
		}
		k.check(t, l, filters...)
	}
	if _, flushed := keyRecords(t, l); flushed == 0 {
		t.Fatal("the workload never flushed")
	}
}

// TestKeyIndexReadsDuringFlushes: readers listing a key while Apply flushes always get a
// prefix of its events, never one with a hole (the transaction and the pending lists
// are taken together).
func TestKeyIndexReadsDuringFlushes(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	const total = 3 * flushSeqs
	// Precompute the events of SKU-3 in the whole workload.
	keys := skuKeys(40)
	var all []uint64
	for i := uint64(1); i <= total; i++ {
		if keys(i)[1] == "SKU-3" {
			all = append(all, i)
		}
	}
	whileApplying(t, l, 2, func(int) string {
		evs, _, err := l.ListEvents(Filter{Keys: map[string]string{"sku": "SKU-3"}}, 1, 100000)
		if err != nil {
			return err.Error()
		}
		for i, ev := range evs {
			if ev.GetSeq() != all[i] {
				return fmt.Sprintf("result %d is seq %d, want %d: a hole", i, ev.GetSeq(), all[i])
			}
		}
		return ""
	}, func() { k.add(total, 500, keys, l) })
	k.check(t, l, Filter{Keys: map[string]string{"sku": "SKU-3"}})
}

// TestMaxBatchFitsWholeWithPendingLists: the largest canonical batch commits whole even
// when the pending key index lists and ids are just under their flush thresholds, so
// its transaction also flushes them.
func TestMaxBatchFitsWholeWithPendingLists(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	// 7,000 events with 128-byte ids and two distinct 100-byte keys each: close to
	// flushIDBytes, flushBytes and (less so) flushKeys at once.
	const n = 7000
	var evs []*storev1.AgentEvent
	for i := range n {
		ae := agentEvent(uint64(i+1), fmt.Sprintf("%0128d", 1_000_000+i),
			"note", fmt.Sprintf("%08d-%s", i, strings.Repeat("n", 91)), "memo", fmt.Sprintf("%08d-%s", i, strings.Repeat("m", 91)))
		evs = append(evs, ae)
	}
	for i := 0; i < n; i += 1000 {
		lg.ingest(l, "a1", evs[i:min(i+1000, n)]...)
	}
	p := l.cur.post
	if p.flushed != 0 || p.idSize < flushIDBytes*9/10 || p.size < flushBytes*8/10 || len(p.lists) < 14000 {
		t.Fatalf("pending state not near the thresholds: %d ids (%d bytes), %d keys (%d bytes), m/kflush %d",
			p.idCount, p.idSize, len(p.lists), p.size, p.flushed)
	}
	res := lg.ingest(l, "a1", maxBatch(t, n+1)...)
	wantResult(t, res, n+MaxBatchEvents, MaxBatchEvents, 0, n+MaxBatchEvents)
	if _, flushed := keyRecords(t, l); flushed != l.LastSeq() {
		t.Fatalf("m/kflush = %d, want the batch's last seq %d", flushed, l.LastSeq())
	}
}

func FuzzDecodePosting(f *testing.F) {
	f.Add(encodePosting([]uint64{1, 257, 513}), uint64(513))
	f.Add(encodePosting([]uint64{1 << 40}), uint64(1<<40))
	f.Add([]byte{0x80}, uint64(0))
	f.Add([]byte{1, 0}, uint64(1))
	f.Fuzz(func(t *testing.T, v []byte, last uint64) {
		l, err := decodePosting(v, last)
		if err != nil {
			return
		}
		if len(l) == 0 || l[len(l)-1] != last || !slices.IsSorted(l) {
			t.Fatalf("decodePosting(%x, %d) = %v", v, last, l)
		}
		for i := 1; i < len(l); i++ {
			if l[i] == l[i-1] {
				t.Fatalf("decodePosting(%x) repeats %d", v, l[i])
			}
		}
		if got, err := decodePosting(encodePosting(l), last); err != nil || !slices.Equal(got, l) {
			t.Fatalf("round trip of %v: %v, %v", l, got, err)
		}
	})
}

// whileApplying runs apply while n readers call read in a loop (with their number),
// and fails on the first message a read returns. A read counts as overlapping a flush
// when the ledger's flush mark (m/kflush, as readers see it) moved while it ran;
// whileApplying fails unless at least one read did, or the test would not be reading
// "during flushes" at all. It returns how many reads ran and how many overlapped.
func whileApplying(t *testing.T, l *Ledger, n int, read func(r int) string, apply func()) (reads, overlapped int64) {
	t.Helper()
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		fail     = make(chan string, n)
		nReads   atomic.Int64
		nOverlap atomic.Int64
	)
	before := flushMark(t, l)
	for r := range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				f0 := flushMark(t, l)
				msg := read(r)
				if flushMark(t, l) != f0 {
					nOverlap.Add(1)
				}
				nReads.Add(1)
				if msg != "" {
					fail <- msg
					return
				}
			}
		})
	}
	apply()
	close(stop)
	wg.Wait()
	select {
	case msg := <-fail:
		t.Fatal(msg)
	default:
	}
	reads, overlapped = nReads.Load(), nOverlap.Load()
	if after := flushMark(t, l); after == before {
		t.Fatalf("the workload never flushed (m/kflush stayed at %d)", before)
	}
	if overlapped == 0 {
		t.Fatalf("none of %d reads overlapped a flush: the test did not read during flushes", reads)
	}
	t.Logf("%d reads, %d of them overlapping a flush", reads, overlapped)
	return reads, overlapped
}

// flushMark is the ledger's m/kflush as its readers see it (the pending lists' base).
func flushMark(t *testing.T, l *Ledger) uint64 {
	h, err := l.acquire()
	if err != nil {
		t.Error(err)
		return 0
	}
	defer l.release(h)
	h.post.mu.RLock()
	defer h.post.mu.RUnlock()
	return h.post.flushed
}
