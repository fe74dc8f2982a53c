package ledger

import (
	"bytes"
	"fmt"
	"google.golang.org/protobuf/types/known/timestamppb"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// countRuns counts the id runs stored in l.
func countRuns(t *testing.T, l *Ledger) int {
	t.Helper()
	n := 0
	err := l.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRunDir})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkIDs looks every event of k up by id in l, and a few ids that are not there.
func checkIDs(t *testing.T, l *Ledger, k *keyLog) {
	t.Helper()
	for s := uint64(1); s <= k.seq; s++ {
		ev, ok, err := l.EventByID(fmt.Sprintf("ev-%d", s))
		if err != nil || !ok || ev.GetSeq() != s {
			t.Fatalf("EventByID(ev-%d) = seq %d, %v, %v", s, ev.GetSeq(), ok, err)
		}
	}
	for _, id := range []string{"ev-0", fmt.Sprintf("ev-%d", k.seq+1), "ev-", "zzz", ""} {
		if _, ok, err := l.EventByID(id); ok || err != nil {
			t.Fatalf("EventByID(%q) = %v, %v; want not found", id, ok, err)
		}
	}
}

// resend sends the ids of events 1..n again from agent, in batches: all must be
// duplicates.
func resend(t *testing.T, lg *raftLog, l *Ledger, base uint64, n int) {
	t.Helper()
	for from := 1; from <= n; from += 1000 {
		// The events as committed, under agent seqs above what their agent committed:
		// only their ids make them duplicates.
		ces, _, err := l.ListEvents(Filter{}, uint64(from), min(1000, n-from+1))
		if err != nil {
			t.Fatal(err)
		}
		var evs []*storev1.AgentEvent
		for _, ce := range ces {
			evs = append(evs, &storev1.AgentEvent{AgentSeq: base + ce.GetSeq(), Event: ce.GetEvent()})
		}
		res := lg.ingest(l, "a1", evs...)
		if res.GetCommitted() != 0 || int(res.GetDuplicates()) != len(evs) || len(res.GetConflicts()) != 0 {
			t.Fatalf("a1 re-sent ev-%d..: committed %d, %d duplicates, %d conflicts; want %d duplicates",
				from, res.GetCommitted(), res.GetDuplicates(), len(res.GetConflicts()), len(evs))
		}
	}
}

// TestIDRuns: ids flushed into runs are found by EventByID and deduplicated, across
// several runs and the pending ids, after the ledger-wide filter filled and was rebuilt
// from the runs, after a reopen and after a restore.
func TestIDRuns(t *testing.T) {
	old := filterMinCapacity
	filterMinCapacity = 10000 // fills during the workload: rebuilt from the runs
	t.Cleanup(func() { filterMinCapacity = old })

	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	k := newKeyLog(t)
	k.add(flushSeqs*3+777, 500, skuKeys(100), l)
	if n := countRuns(t, l); n != 3 {
		t.Fatalf("%d id runs after %d events; want 3", n, k.seq)
	}
	waitFilterGrown(t, l, &k.lg, 10000)
	if p := l.cur.post; uint64(p.idCount) != k.seq-p.flushed || p.idCount == 0 {
		t.Fatalf("%d pending ids after m/kflush %d of %d events", p.idCount, p.flushed, k.seq)
	}
	checkIDs(t, l, k)
	resend(t, &k.lg, l, 1<<20, int(k.seq))

	stream := snapshotBytes(t, l)
	snapCmds := slices.Clone(k.lg.cmds)
	hash := mustHash(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if mustHash(t, l) != hash {
		t.Fatal("reopen changed the state")
	}
	checkIDs(t, l, k)
	resend(t, &k.lg, l, 2<<20, int(k.seq))

	cp := newLedger(t, false)
	if err := cp.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	checkIDs(t, cp, k)
	lg := &raftLog{t: t, cmds: snapCmds}
	resend(t, lg, cp, 3<<20, int(k.seq))
}

// TestIDLookupsDuringFlushes: an event committed before EventByID starts is always
// found, while Apply moves ids from memory into runs.
func TestIDLookupsDuringFlushes(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	var calls [2]uint64
	whileApplying(t, l, 2, func(r int) string {
		calls[r]++
		last := l.LastSeq()
		if last == 0 {
			return ""
		}
		s := last - (calls[r]*2+uint64(r))%min(last, 3000) // recent events: pending or just flushed
		ev, ok, err := l.EventByID(fmt.Sprintf("ev-%d", s))
		if err != nil || !ok || ev.GetSeq() != s {
			return fmt.Sprintf("EventByID(ev-%d) = %v, %v", s, ok, err)
		}
		return ""
	}, func() { k.add(3*flushSeqs, 500, skuKeys(40), l) })
}

// checkRunDir lays keys out as a run's in-memory directory and checks that it gives
// each key back and, for sorted keys, finds the block that can hold each key, v and a
// few others as a search of the keys as strings does.
func checkRunDir(t *testing.T, keys []string, v []byte) {
	t.Helper()
	d := putRunDir(make([]byte, runDirBytes(keys)), keys)
	if d.n != len(keys) {
		t.Fatalf("directory of %d keys has %d", len(keys), d.n)
	}
	for i, k := range keys {
		if string(d.key(i)) != k {
			t.Fatalf("key %d: %q, want %q", i, d.key(i), k)
		}
	}
	if !slices.IsSorted(keys) {
		return
	}
	probes := append(slices.Clone(keys), string(v), "", "\xff")
	for _, k := range keys {
		probes = append(probes, k+"\x00", k[:len(k)/2])
	}
	for _, k := range probes {
		want := sort.SearchStrings(keys, k)
		if want == len(keys) || keys[want] != k {
			want--
		}
		if got := d.block([]byte(k)); got != want {
			t.Fatalf("block(%q) = %d, want %d (keys %q)", k, got, want, keys)
		}
	}
}

func TestRunDir(t *testing.T) {
	checkRunDir(t, nil, nil)
	checkRunDir(t, []string{"i/b"}, nil)
	checkRunDir(t, []string{"i/a", "i/ab", "i/b", "i/zz"}, []byte("i/aa"))
}

func FuzzDecodeRunBlock(f *testing.F) {
	f.Add(encodeRunBlock([]runID{{"i/a", 1}, {"i/b", 300}}))
	f.Add(encodeRunDir([]string{"i/a", "i/zz"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, v []byte) {
		var ids []runID
		err := decodeRunBlock(v, func(k []byte, s uint64) bool {
			ids = append(ids, runID{string(k), s})
			return true
		})
		if err == nil {
			var again []runID
			if err := decodeRunBlock(encodeRunBlock(ids), func(k []byte, s uint64) bool {
				again = append(again, runID{string(k), s})
				return true
			}); err != nil || !slices.Equal(again, ids) {
				t.Fatalf("round trip: %v, %v vs %v", err, again, ids)
			}
		}
		if d, err := decodeRunDir(v); err == nil {
			if got, err := decodeRunDir(encodeRunDir(d)); err != nil || !slices.Equal(got, d) {
				t.Fatalf("directory round trip: %v, %q vs %q", err, got, d)
			}
			checkRunDir(t, d, v)
		}
	})
}

// FuzzChunkEvent holds chunkEvent (one event of a chunk, by its offset from the first
// seq) to decoding the whole chunk, dense or sparse (offsets, layout 6).
func FuzzChunkEvent(f *testing.F) {
	c := &storev1.LogChunk{FirstSeq: 7, Agent: "a1", Events: []*storev1.AgentEvent{agentEvent(1, "e1", "sku", "S"), agentEvent(2, "e2")}}
	b, err := proto.Marshal(c)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, uint64(1))
	f.Add(b, uint64(2))
	c.Offsets, c.CommittedAt = []uint32{3, 9}, timestamppb.New(t0)
	if b, err = proto.Marshal(c); err != nil {
		f.Fatal(err)
	}
	f.Add(b, uint64(3))
	f.Add(b, uint64(9))
	f.Add(b, uint64(4))
	f.Fuzz(func(t *testing.T, v []byte, i uint64) {
		one, ok, err := chunkEvent(v, i)
		var all storev1.LogChunk
		if proto.Unmarshal(v, &all) != nil {
			return // chunkEvent may or may not notice: it decodes less
		}
		if at, err := chunkCommittedAt(v); err != nil || !at.Equal(all.GetCommittedAt().AsTime()) {
			t.Fatalf("chunkCommittedAt = %v, %v; the chunk says %v", at, err, all.GetCommittedAt().AsTime())
		}
		if checkOffsets(all.GetOffsets(), len(all.GetEvents())) != nil {
			if err == nil {
				t.Fatalf("chunkEvent accepted offsets %v for %d events", all.GetOffsets(), len(all.GetEvents()))
			}
			return
		}
		if err != nil {
			t.Fatalf("chunkEvent failed on a chunk that decodes: %v", err)
		}
		idx, want := -1, i < uint64(len(all.GetEvents()))
		if want {
			idx = int(i)
		}
		if off := all.GetOffsets(); len(off) > 0 {
			idx = slices.Index(off, uint32(i))
			want = i <= math.MaxUint32 && idx >= 0
		}
		if ok != want {
			t.Fatalf("chunkEvent(%d) ok = %v with %d events, offsets %v", i, ok, len(all.GetEvents()), all.GetOffsets())
		}
		if !ok {
			return
		}
		w := proto.CloneOf(&all)
		w.Events, w.Offsets = w.Events[idx:idx+1], nil
		if !proto.Equal(one, w) {
			t.Fatalf("chunkEvent(%d) = %v, want %v", i, one, w)
		}
	})
}

// TestFilterGrowthCatchesUp: a larger filter built in the background from the runs that
// existed when it started is completed, before it is put in place, with the runs
// written since and the pending ids, so it holds every id.
func TestFilterGrowthCatchesUp(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	p := l.cur.post
	if len(p.runs) != 2 || p.idCount == 0 {
		t.Fatalf("%d runs and %d pending ids; want 2 and some", len(p.runs), p.idCount)
	}
	// What the background build would have made had it started with one run.
	g := &filterBuild{done: make(chan struct{}), lastRun: p.runs[0].last, filter: newIDFilter(0)}
	close(g.done)
	if err := l.view(func(txn *badger.Txn) error {
		return p.runs[0].eachID(txn, func(id []byte) { g.filter.add(id) })
	}); err != nil {
		t.Fatal(err)
	}
	p.grow = g
	l.growFilter(l.cur, false)
	if p.filter != g.filter || p.grow != nil {
		t.Fatal("the finished filter was not put in place")
	}
	for s := uint64(1); s <= k.seq; s++ {
		if p.filter.absent(idKey("a1", fmt.Sprintf("ev-%d", s))) {
			t.Fatalf("ev-%d is missing from the grown filter", s)
		}
	}
}

// TestSortedIDs holds the radix sort of run ids to string order, on shapes of ids that
// exercise its cases: a long shared prefix, keys that are prefixes of other keys, zero
// bytes (the padding value), keys equal in the 8 bytes it sorts by, every length, and
// sizes on both sides of radixMinIDs. Each pending map is one Apply's ids.
func TestSortedIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabets := []string{"\x00\x01\xff", "ab", "0123456789abcdef", "\x00a"}
	for trial := range 300 {
		n := []int{1, 2, radixMinIDs - 1, radixMinIDs, radixMinIDs + 1, 1000, 3000}[trial%7]
		prefix := strings.Repeat("i/ev_", rng.IntN(3))
		alpha := alphabets[trial%len(alphabets)]
		seen := map[string]bool{}
		pending := []map[string]uint64{{}}
		want := make([]runID, 0, n)
		for len(want) < n {
			k := []byte(prefix)
			for range rng.IntN(14) {
				k = append(k, alpha[rng.IntN(len(alpha))])
			}
			if seen[string(k)] {
				continue
			}
			seen[string(k)] = true
			if rng.IntN(50) == 0 {
				pending = append(pending, map[string]uint64{})
			}
			s := uint64(len(want) + 1)
			pending[len(pending)-1][string(k)] = s
			want = append(want, runID{string(k), s})
		}
		slices.SortFunc(want, func(a, b runID) int { return strings.Compare(a.key, b.key) })
		if got := sortedIDs(pending, n); !slices.Equal(got, want) {
			t.Fatalf("trial %d (%d ids, alphabet %q, prefix %q): sortedIDs differs from string order", trial, n, alpha, prefix)
		}
	}
}

// BenchmarkSortedIDs sorts a flush's worth of ids as agents make them ("ev_" and 32
// hex digits).
func BenchmarkSortedIDs(b *testing.B) {
	m := make(map[string]uint64, 16384)
	for i := range 16384 {
		m[canonical.ID("agent-1", "erp", fmt.Sprint(i))] = uint64(i)
	}
	for b.Loop() {
		ids := sortedIDs([]map[string]uint64{m}, len(m))
		if !slices.IsSortedFunc(ids, func(a, b runID) int { return strings.Compare(a.key, b.key) }) {
			b.Fatal("not sorted")
		}
	}
}
