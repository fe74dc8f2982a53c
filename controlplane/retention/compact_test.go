package retention_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/retention"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// levelLog commits inventory levels (and filler) through an applyingLeader and
// remembers the newest seq of each key.
type levelLog struct {
	t      *testing.T
	s      *applyingLeader
	seq    uint64            // agent seq
	newest map[string]uint64 // sku -> newest ledger seq
}

// levels commits, at the leader's time, one level for each sku in order.
func (g *levelLog) levels(skus ...string) {
	g.t.Helper()
	b := &storev1.IngestBatch{AgentId: "a1"}
	for _, sku := range skus {
		g.seq++
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: g.seq, Event: &eventv1.Event{
			Id: fmt.Sprint("e", g.seq), Type: "inventory.level", Keys: map[string]string{"sku": sku, "location": "WH1"},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: fmt.Sprint(g.seq)}},
		}})
	}
	first := g.s.l.LastSeq() + 1
	if _, err := g.s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
		g.t.Fatal(err)
	}
	for i, sku := range skus {
		g.newest[sku] = first + uint64(i)
	}
}

// filler commits n notes (kept 30 days), so the key index flushes past the levels: a
// prune never passes the last flush.
func (g *levelLog) filler(n int) {
	g.t.Helper()
	for n > 0 {
		b := &storev1.IngestBatch{AgentId: "a1"}
		for range min(n, 1000) {
			g.seq++
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: g.seq, Event: &eventv1.Event{Id: fmt.Sprint("e", g.seq), Type: "note"}})
		}
		n -= len(b.Events)
		if _, err := g.s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
			g.t.Fatal(err)
		}
	}
}

// held is, per sku, the newest seq a view rebuilt on the ledger would fold: the
// compacted base, then the levels the log holds. base is what the base holds.
func (g *levelLog) held() (view, base map[string]uint64) {
	g.t.Helper()
	view, base = map[string]uint64{}, map[string]uint64{}
	if err := g.s.l.ScanCompacted([]string{"inventory.level"}, func(ev *eventv1.CommittedEvent) error {
		base[ev.GetEvent().GetKeys()["sku"]] = ev.GetSeq()
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
	maps.Copy(view, base)
	evs, _, err := g.s.l.ListEvents(ledger.Filter{Type: "inventory.level"}, 0, 100_000)
	if err != nil {
		g.t.Fatal(err)
	}
	for _, ev := range evs {
		view[ev.GetEvent().GetKeys()["sku"]] = ev.GetSeq()
	}
	return view, base
}

// firstPrune runs p once on s and returns the first prune it proposed (and applied).
func firstPrune(t *testing.T, s *applyingLeader, p *retention.Pruner) *storev1.PruneLedger {
	t.Helper()
	s.prunes = nil
	if _, err := p.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(s.prunes) == 0 {
		t.Fatal("no prune proposed")
	}
	return s.prunes[0]
}

func skus(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// TestOnceCompactsOnlyKeysTheLogDrops: the leader follows the log and lists in the
// prune only the keys whose newest event it removes; the compacted base holds those
// and no key the log holds a newer event of, and a view rebuilt from the base and the
// log sees every key's newest event. A new leader (a new Pruner) follows from the
// low-water mark and lists the same way; a follower over its key limit lists nothing,
// and the prune compacts every key it removes.
func TestOnceCompactsOnlyKeysTheLogDrops(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newApplyingLeader(t, t0)
	g := &levelLog{t: t, s: s, newest: map[string]uint64{}}
	day := 24 * time.Hour
	a, b, c := skus("A", 10), skus("B", 10), skus("C", 5)
	// The default retention keeps levels 7 days and compacts them.
	for range 3 {
		g.levels(a...)
		g.levels(b...)
	}
	s.now = t0.Add(8 * day)
	g.levels(a...)
	g.levels(c...)
	g.filler(17_000)
	s.now = t0.Add(8*day + time.Minute)

	check := func(p *retention.Pruner, want []string) {
		t.Helper()
		m := firstPrune(t, s, p)
		var wantSeqs []uint64
		for _, sku := range want {
			wantSeqs = append(wantSeqs, g.newest[sku])
		}
		slices.Sort(wantSeqs)
		if !m.GetCompactListed() || !slices.Equal(m.GetCompactSeqs(), wantSeqs) {
			t.Fatalf("prune lists %v (listed %v), want the newest of %v: %v", m.GetCompactSeqs(), m.GetCompactListed(), want, wantSeqs)
		}
		view, _ := g.held()
		if !maps.Equal(view, g.newest) {
			t.Fatalf("a view rebuilt from the base and the log sees %v, want %v", view, g.newest)
		}
	}
	// A's older levels go, but the log holds a newer one of each; B's go with their
	// newest; C stays.
	check(retention.New(retention.Config{Store: s, Now: func() time.Time { return s.now }}), b)
	if _, base := g.held(); len(base) != len(b) {
		t.Fatalf("the base holds %v, want B's levels only", base)
	}

	// Another leader: half of A moves again, then A's and C's earlier levels go.
	s.now = t0.Add(16 * day)
	g.levels(a[:5]...)
	g.filler(17_000)
	s.now = t0.Add(16*day + time.Minute)
	check(retention.New(retention.Config{Store: s, Now: func() time.Time { return s.now }}), append(slices.Clone(a[5:]), c...))
	if _, base := g.held(); len(base) != len(b)+5+len(c) {
		t.Fatalf("the base holds %d keys %v, want B, A5-A9 and C", len(base), base)
	}

	// A follower over its limit lists nothing: every key pruned is compacted.
	s.now = t0.Add(24 * day)
	g.levels(c...)
	g.filler(17_000)
	s.now = t0.Add(24*day + time.Minute)
	s.prunes = nil
	if _, err := retention.New(retention.Config{Store: s, CompactKeys: 3, Now: func() time.Time { return s.now }}).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(s.prunes) == 0 || s.prunes[0].GetCompactListed() {
		t.Fatalf("over its key limit the leader listed compacted seqs: %v", s.prunes)
	}
	view, base := g.held()
	if !maps.Equal(view, g.newest) || base["A0"] != g.newest["A0"] {
		t.Fatalf("without a list: view %v, base %v; want %v, with A0's newest in the base", view, base, g.newest)
	}
}

// TestOnceListsOnlyWhenEveryNodeCan: while Config.CanList says a node does not apply a
// listed prune (a node of an older build), the leader's prune lists nothing and
// compacts every key it removes, as every build does; once every node can, it lists
// again.
func TestOnceListsOnlyWhenEveryNodeCan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newApplyingLeader(t, t0)
	g := &levelLog{t: t, s: s, newest: map[string]uint64{}}
	day := 24 * time.Hour
	a, b := skus("A", 10), skus("B", 10)
	older := errors.New("node-3 has not reported a build that applies listed prunes")
	var canList error = older
	p := retention.New(retention.Config{Store: s, Now: func() time.Time { return s.now }, CanList: func() error { return canList }})

	prune := func() *storev1.PruneLedger {
		t.Helper()
		m := firstPrune(t, s, p)
		if view, _ := g.held(); !maps.Equal(view, g.newest) {
			t.Fatalf("a view rebuilt from the base and the log sees %v, want %v", view, g.newest)
		}
		return m
	}

	// A's levels move after the cutoff, B's do not: a listed prune would write B only.
	g.levels(a...)
	g.levels(b...)
	s.now = t0.Add(8 * day)
	g.levels(a...)
	g.filler(17_000)
	s.now = t0.Add(8*day + time.Minute)
	if m := prune(); m.GetCompactListed() || len(m.GetCompactSeqs()) != 0 {
		t.Fatalf("with a node that cannot apply a list, the prune listed %v", m.GetCompactSeqs())
	}
	if st := p.CompactStats(); st.Listed {
		t.Fatalf("CompactStats says listed (%+v) for a prune that listed nothing", st)
	}
	if _, base := g.held(); base["A0"] == 0 || base["B0"] == 0 {
		t.Fatalf("an unlisted prune compacts every key it removes; the base holds %v", base)
	}

	// Every node reports it now: the next prune lists the keys whose newest it removes.
	canList = nil
	s.now = t0.Add(16 * day)
	g.levels(a[:5]...)
	g.filler(17_000)
	s.now = t0.Add(16*day + time.Minute)
	m := prune()
	var want []uint64
	for _, sku := range a[5:] {
		want = append(want, g.newest[sku])
	}
	slices.Sort(want)
	if !m.GetCompactListed() || !slices.Equal(m.GetCompactSeqs(), want) {
		t.Fatalf("prune lists %v (listed %v), want A5-A9's newest %v", m.GetCompactSeqs(), m.GetCompactListed(), want)
	}
}
