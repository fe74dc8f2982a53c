package ledger

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func TestIDFilterHasNoFalseNegatives(t *testing.T) {
	f := newIDFilter(0)
	const n = 200_000
	for i := range n {
		f.add(fmt.Appendf(nil, "i/agent/%d", i))
	}
	for i := range n {
		if f.absent(fmt.Appendf(nil, "i/agent/%d", i)) {
			t.Fatalf("key %d added but reported absent", i)
		}
	}
	fp := 0
	for i := range n {
		if !f.absent(fmt.Appendf(nil, "i/other/%d", i)) {
			fp++
		}
	}
	// Sized for 4M keys and holding 200k, it should almost never be wrong; 1% is what
	// a full filter gives.
	if rate := float64(fp) / n; rate > 0.01 {
		t.Fatalf("false positive rate %.4f with the filter at 5%% of capacity", rate)
	}
}

// TestIDFilterAddKeys checks that addKeys (used when a database is opened) sets exactly
// the bits that add sets key by key, over more keys than one slice of its read-ahead,
// and counts them.
func TestIDFilterAddKeys(t *testing.T) {
	one, many := newRunFilter(5000), newRunFilter(5000)
	many.seed = one.seed
	var ks [][]byte
	for i := range 3*addKeysSlice + 17 {
		k := fmt.Appendf(nil, "i/agent/%d", i)
		one.add(k)
		ks = append(ks, k)
	}
	hs := many.addKeys(ks[:10], nil)
	hs = many.addKeys(ks[10:], hs)
	if cap(hs) < len(ks)-10 {
		t.Fatalf("scratch of capacity %d returned after hashing %d keys", cap(hs), len(ks)-10)
	}
	if many.n != one.n {
		t.Fatalf("addKeys counted %d keys, add %d", many.n, one.n)
	}
	for i := range one.blocks {
		if one.blocks[i] != many.blocks[i] {
			t.Fatalf("block %d differs: add set %x, addKeys %x", i, one.blocks[i], many.blocks[i])
		}
	}
}

// TestDedupByIDWithFilter checks id dedup after the filter filled up and was rebuilt
// larger, after a reopen and after a restore.
func TestDedupByIDWithFilter(t *testing.T) {
	old := filterMinCapacity
	filterMinCapacity = 64 // fill it quickly
	t.Cleanup(func() { filterMinCapacity = old })

	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := &raftLog{t: t}
	batch := func(from, n int) []*storev1.AgentEvent {
		var evs []*storev1.AgentEvent
		for i := from; i < from+n; i++ {
			evs = append(evs, agentEvent(uint64(i+1), id("shared", i)))
		}
		return evs
	}
	// resent is batch under agent seqs from base on (above what is committed), so
	// only the ids can make its events duplicates.
	resent := func(base, from, n int) []*storev1.AgentEvent {
		evs := batch(from, n)
		for i, ae := range evs {
			ae.AgentSeq = uint64(base + i)
		}
		return evs
	}
	// a1 commits 300 ids (the filter, sized for 64, fills and is rebuilt larger), then
	// sends the same ids again with new seqs: every one is a duplicate. a2's same ids
	// are its own: they commit.
	for i := 0; i < 300; i += 50 {
		wantResult(t, lg.ingest(l, "a1", batch(i, 50)...), uint64(i+50), 50, 0, uint64(i+50))
	}
	waitFilterGrown(t, l, lg, 64)
	res := lg.ingest(l, "a1", resent(1000, 0, 300)...)
	if res.GetCommitted() != 0 || res.GetDuplicates() != 300 {
		t.Fatalf("same ids from the same agent: %v, want 300 duplicates", res)
	}
	if res := lg.ingest(l, "a2", batch(0, 300)...); res.GetCommitted() != 300 {
		t.Fatalf("same ids from a second agent: %v, want 300 committed", res)
	}
	// New ids still commit.
	if res := lg.ingest(l, "a2", agentEvent(301, "fresh-1")); res.GetCommitted() != 1 {
		t.Fatalf("new id: %v", res)
	}
	stream := snapshotBytes(t, l)
	hash := mustHash(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: duplicates are still caught.
	l, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if mustHash(t, l) != hash {
		t.Fatal("reopen changed the state")
	}
	lg2 := &raftLog{t: t, cmds: lg.cmds}
	res = lg2.ingest(l, "a2", resent(2000, 0, 150)...)
	res2 := lg2.ingest(l, "a2", append(resent(3000, 150, 150), agentEvent(4000, "fresh-1"))...)
	if res.GetDuplicates()+res2.GetDuplicates() != 301 || res.GetCommitted()+res2.GetCommitted() != 0 {
		t.Fatalf("after reopen: %v then %v, want 301 duplicates", res, res2)
	}

	// Restore into a fresh ledger: its filter is rebuilt from the restored ids.
	cp := newLedger(t, false)
	if err := cp.Restore(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	lg3 := &raftLog{t: t, cmds: lg.cmds}
	if res := lg3.ingest(cp, "a1", resent(5000, 0, 300)...); res.GetDuplicates() != 300 {
		t.Fatalf("after restore: %v, want 300 duplicates", res)
	}
}

// TestIDFilterFalsePositiveRates: filled to capacity, the ledger-wide filter is wrong
// about 0.1% of the time and a run's about 1%; more would make lookups read more runs.
func TestIDFilterFalsePositiveRates(t *testing.T) {
	const n = 100_000
	for _, tc := range []struct {
		name string
		f    *idFilter
		max  float64
	}{
		{"ledger-wide", newFilter(n, 16, 11), 0.003},
		{"run", newRunFilter(n), 0.015},
	} {
		for i := range n {
			tc.f.add(fmt.Appendf(nil, "i/in/%d", i))
		}
		fp := 0
		for i := range 4 * n {
			if !tc.f.absent(fmt.Appendf(nil, "i/out/%d", i)) {
				fp++
			}
		}
		rate := float64(fp) / (4 * n)
		t.Logf("%s filter full: %.4f%% false positives", tc.name, 100*rate)
		if rate > tc.max {
			t.Errorf("%s filter full: false positive rate %.4f, want at most %.4f", tc.name, rate, tc.max)
		}
	}
}

// waitFilterGrown applies empty batches until the ledger-wide id filter is sized for
// more than capacity ids: the larger one is built in the background and an Apply puts
// it in place.
func waitFilterGrown(t *testing.T, l *Ledger, lg *raftLog, capacity int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "id filter rebuilt larger", func() bool {
		lg.ingest(l, "tick")
		return l.cur.post.filter.capacity > capacity
	})
}
