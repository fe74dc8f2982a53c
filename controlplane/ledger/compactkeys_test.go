package ledger

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestCompactedKeys: read in small batches from any seq, CompactedKeys gives every
// event of the types asked for that the log holds, once each, in seq order, with the
// key its compacted record would have, and says where the log ends; after a prune it
// starts at what is held.
func TestCompactedKeys(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(3000, 500, skuKeys(40), l) // every 7th event is an order.created
	read := func(from uint64, batch int) (seqs []uint64, reads int) {
		t.Helper()
		for next := from; ; reads++ {
			if reads > 1000 {
				t.Fatal("CompactedKeys does not finish")
			}
			n, more, err := l.CompactedKeys([]string{"inventory.level"}, next, batch, func(seq uint64, typ string, key []byte) {
				if typ != "inventory.level" || k.types[seq] != typ {
					t.Errorf("seq %d given as %q, it is %q", seq, typ, k.types[seq])
				}
				if want := compactedKey(typ, k.keys[seq]); !bytes.Equal(key, want) {
					t.Errorf("seq %d: key %q, want %q", seq, key, want)
				}
				seqs = append(seqs, seq)
			})
			if err != nil {
				t.Fatal(err)
			}
			if n <= next && more {
				t.Fatalf("from %d: next %d, no progress", next, n)
			}
			next = n
			if !more {
				if n != k.seq+1 {
					t.Fatalf("done at next %d, want %d (past the last seq)", n, k.seq+1)
				}
				return seqs, reads + 1
			}
		}
	}
	levels := func(from uint64) (want []uint64) {
		for s := max(from, 1); s <= k.seq; s++ {
			if k.types[s] == "inventory.level" {
				want = append(want, s)
			}
		}
		return want
	}
	for _, from := range []uint64{0, 1, 1234, 2999} {
		got, reads := read(from, 300)
		if !slices.Equal(got, levels(from)) {
			t.Fatalf("from %d: %d seqs %v..., want %d", from, len(got), got[:min(len(got), 5)], len(levels(from)))
		}
		if from <= 1 && reads < 5 {
			t.Fatalf("from %d in batches of 300: %d reads, want several", from, reads)
		}
	}
	if got, reads := read(k.seq+1, 300); len(got) != 0 || reads != 1 {
		t.Fatalf("past the end: %v in %d reads", got, reads)
	}

	k.add(2*flushSeqs, 1000, skuKeys(40), l) // a prune never passes the last flush
	k.prune(&storev1.PruneLedger{DefaultBelow: 2000}, l)
	if got, _ := read(0, 5000); !slices.Equal(got, levels(2000)) {
		t.Fatalf("after pruning below 2000: %d seqs from %v, want %d from 2000", len(got), got[:min(len(got), 3)], len(levels(2000)))
	}

	if _, _, err := l.CompactedKeys([]string{strings.Repeat("x", maxKeyPart+1)}, 1, 10, func(uint64, string, []byte) {}); err == nil || !strings.Contains(err.Error(), "not indexed") {
		t.Fatalf("an unindexed type: %v, want an error saying so", err)
	}
}

// TestPruneCompactListed: a prune listing its compacted events (compact_listed)
// writes those and no other, whatever else of the compact types it removes; a listed
// seq it does not remove yet is not written; an unsorted list is refused.
func TestPruneCompactListed(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(2*flushSeqs+300, 500, skuKeys(40), l)
	compacted := func() []uint64 {
		t.Helper()
		var seqs []uint64
		if err := l.ScanCompacted([]string{"inventory.level"}, func(ev *eventv1.CommittedEvent) error {
			seqs = append(seqs, ev.GetSeq())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(seqs)
		return seqs
	}
	// Every other key's newest level below 3000, and one level above the cutoff.
	newest := map[string]uint64{}
	for s := uint64(1); s < 3000; s++ {
		if k.types[s] == "inventory.level" {
			newest[k.keys[s]["sku"]+"/"+k.keys[s]["location"]] = s
		}
	}
	var listed []uint64
	for i, key := range slices.Sorted(func(yield func(string) bool) {
		for key := range newest {
			if !yield(key) {
				return
			}
		}
	}) {
		if i%2 == 0 {
			listed = append(listed, newest[key])
		}
	}
	slices.Sort(listed)
	above := uint64(3001)
	for k.types[above] != "inventory.level" {
		above++
	}
	if res := k.lg.apply(l, pruneCmd(t, &storev1.PruneLedger{DefaultBelow: 3000, Compact: []string{"inventory.level"}, CompactListed: true,
		CompactSeqs: []uint64{listed[1], listed[0]}})); !strings.Contains(res.(*storev1.PruneResult).GetError(), "ascending") {
		t.Fatalf("unsorted compact_seqs: %v, want a refusal", res)
	}
	k.prune(&storev1.PruneLedger{DefaultBelow: 3000, Compact: []string{"inventory.level"}, CompactListed: true,
		CompactSeqs: append(slices.Clone(listed), above)}, l)
	if got := compacted(); !slices.Equal(got, listed) || len(listed) < 40 {
		t.Fatalf("compacted %d seqs %v, want the %d listed %v", len(got), got, len(listed), listed)
	}
	// Listing nothing compacts nothing; without the list every key is compacted again.
	k.prune(&storev1.PruneLedger{DefaultBelow: 6000, Compact: []string{"inventory.level"}, CompactListed: true}, l)
	if got := compacted(); !slices.Equal(got, listed) {
		t.Fatalf("an empty list changed the compacted base: %v", got)
	}
	k.prune(&storev1.PruneLedger{DefaultBelow: 9000, Compact: []string{"inventory.level"}}, l)
	if got := compacted(); len(got) != len(newest) || got[0] < 6000 {
		t.Fatalf("without a list: %d compacted from seq %v, want all %d keys from 6000", len(got), got[:1], len(newest))
	}
}

// BenchmarkCompactedKeys: what the retention leader's follower of compact keys costs per
// event read (ns/op is per event), over 100,000 levels of 6,000 keys on disk, read in
// batches of 50,000 as the follower does.
func BenchmarkCompactedKeys(b *testing.B) {
	l := newLedger(b, true)
	k := newKeyLog(b)
	k.add(100_000, 1000, skuKeys(2000), l)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		for next, more := uint64(1), true; more && n < b.N; {
			var err error
			next, more, err = l.CompactedKeys([]string{"inventory.level"}, next, 50_000, func(uint64, string, []byte) { n++ })
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
