package retention_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/retention"
	"github.com/crossdock/crossdock/controlplane/routing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestCompute: cutoffs are the first seq committed at or after now - keep, per type,
// capped at the hold; the dedup cutoff follows the window.
func TestCompute(t *testing.T) {
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	for i, typ := range []string{"inventory.level", "order", "inventory.level"} { // commits at t0, +10s, +20s
		b := &storev1.IngestBatch{AgentId: "a1"}
		for j := 0; j < 3; j++ {
			seq++
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: seq, Event: &eventv1.Event{Id: fmt.Sprint("e", seq), Type: typ}})
		}
		p, _ := proto.Marshal(b)
		if _, err := l.Apply(uint64(i+1), t0.Add(time.Duration(i)*10*time.Second), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	r := routing.Retention{Default: 15 * time.Second, Types: map[string]time.Duration{"inventory.level": 5 * time.Second, "order": time.Hour},
		Compact: []string{"inventory.level"}, DedupWindow: 24 * time.Hour}
	now := t0.Add(21 * time.Second)
	for _, tc := range []struct {
		hold                uint64
		def, inv, order, dd uint64
	}{{0, 4, 7, 1, 1}, {5, 4, 5, 1, 1}, {2, 2, 2, 1, 1}} {
		m, err := retention.Compute(l, r, tc.hold, now)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, c := range m.GetTypes() {
			got[c.GetType()] = c.GetBelow()
		}
		if m.GetDefaultBelow() != tc.def || got["inventory.level"] != tc.inv || got["order"] != tc.order || m.GetDedupBelow() != tc.dd ||
			m.GetTypes()[0].GetType() != "inventory.level" || !m.GetDedupAt().AsTime().Equal(now.Add(-24*time.Hour)) || !m.GetComputedAt().AsTime().Equal(now) {
			t.Fatalf("hold %d: %v; want default %d, inventory.level %d, order %d, dedup %d", tc.hold, m, tc.def, tc.inv, tc.order, tc.dd)
		}
	}
}

// ledgerOnly gives the Pruner a real ledger; Ahead uses nothing else of the node (it
// neither leads nor proposes), so the raft methods are never called.
type ledgerOnly struct{ l *ledger.Ledger }

func (s ledgerOnly) Ledger() *ledger.Ledger                      { return s.l }
func (s ledgerOnly) IsLeader() bool                              { return false }
func (s ledgerOnly) WaitForLeadership(ctx context.Context) error { return errors.New("not a node") }
func (s ledgerOnly) Propose(context.Context, storev1.CommandType, proto.Message) (any, error) {
	return nil, errors.New("not a node")
}

// TestAhead: every node archives, in the background, the events the prune will remove
// one interval from now (here the inventory levels committed before t0+5s, 7 days ago
// one interval ahead; the default retention keeps them 7 days and orders 2 years), into
// its archive, without changing the ledger; a second run archives nothing more.
func TestAhead(t *testing.T) {
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := uint64(0)
	for i, typ := range []string{"inventory.level", "order", "inventory.level"} { // commits at t0, +10s, +20s
		b := &storev1.IngestBatch{AgentId: "a1"}
		for j := 0; j < 3; j++ {
			seq++
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: seq, Event: &eventv1.Event{Id: fmt.Sprint("e", seq), Type: typ}})
		}
		p, _ := proto.Marshal(b)
		if _, err := l.Apply(uint64(i+1), t0.Add(time.Duration(i)*10*time.Second), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	arc, err := archive.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	before, _ := l.Hash()
	p := retention.New(retention.Config{Store: ledgerOnly{l}, Archiver: arc, Interval: 10 * time.Second,
		Now: func() time.Time { return t0.Add(168*time.Hour + 5*time.Second - 10*time.Second) }})
	ctx := context.Background()
	for range 2 {
		if err := p.Ahead(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if w, _ := arc.ArchivedThrough(ctx, "inventory.level"); w != 3 {
		t.Fatalf("inventory.level archived through seq %d, want 3 (the levels of t0, below the cutoff one interval ahead)", w)
	}
	if w, _ := arc.ArchivedThrough(ctx, "order"); w != 0 {
		t.Fatalf("order archived through seq %d, want none (kept 2 years)", w)
	}
	lst, err := arc.List(ctx, archive.Filter{})
	if err != nil || len(lst.Files) != 1 || lst.Files[0].Events != 3 {
		t.Fatalf("archive files %+v (%v), want one of 3 events", lst, err)
	}
	if after, _ := l.Hash(); after != before {
		t.Fatal("Ahead changed the ledger")
	}
}

// newApplyingLeader is an applyingLeader on an in-memory ledger, its clock at now.
func newApplyingLeader(t *testing.T, now time.Time) *applyingLeader {
	t.Helper()
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &applyingLeader{l: l, now: now}
}

// applyingLeader is a one-node "cluster" without raft: it leads and applies every
// proposal to its real ledger at once, recording what each prune step removed.
type applyingLeader struct {
	l      *ledger.Ledger
	index  uint64
	now    time.Time
	steps  []uint64               // events removed by each PRUNE_LEDGER
	prunes []*storev1.PruneLedger // each PRUNE_LEDGER proposed
}

func (s *applyingLeader) Ledger() *ledger.Ledger                  { return s.l }
func (s *applyingLeader) IsLeader() bool                          { return true }
func (s *applyingLeader) WaitForLeadership(context.Context) error { return nil }
func (s *applyingLeader) Propose(_ context.Context, typ storev1.CommandType, m proto.Message) (any, error) {
	p, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	s.index++
	if pm, ok := m.(*storev1.PruneLedger); ok {
		s.prunes = append(s.prunes, proto.CloneOf(pm))
	}
	res, err := s.l.Apply(s.index, s.now, &storev1.Command{Type: typ, Payload: p})
	if r, ok := res.(*storev1.PruneResult); ok {
		s.steps = append(s.steps, r.GetEventsPruned())
	}
	return res, err
}

// TestOnceInSteps: the leader prunes in steps of at most StepEvents, proposing the next
// when one is committed, until nothing below the cutoffs is left.
func TestOnceInSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newApplyingLeader(t, t0)
	seq := uint64(0)
	for range 20 {
		b := &storev1.IngestBatch{AgentId: "a1"}
		for range 1000 {
			seq++
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: seq, Event: &eventv1.Event{Id: fmt.Sprint("e", seq), Type: "note"}})
		}
		if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
			t.Fatal(err)
		}
	}
	// The default retention keeps other types 30 days: a year later, with one event
	// committed then, all 20,000 before it may go (as far as the ledger has flushed
	// their index records, every 16,384 seqs).
	s.now = t0.Add(365 * 24 * time.Hour)
	last := &storev1.IngestBatch{AgentId: "a1", Events: []*storev1.AgentEvent{{AgentSeq: seq + 1, Event: &eventv1.Event{Id: "now", Type: "note"}}}}
	if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, last); err != nil {
		t.Fatal(err)
	}
	p := retention.New(retention.Config{Store: s, StepEvents: 2500, Now: func() time.Time { return s.now }})
	n, err := p.Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for i, st := range s.steps {
		sum += st
		if st > 2500 || (i < len(s.steps)-1 && st < 2500-256) {
			t.Fatalf("steps %v: want each at most StepEvents 2500, and all but the last within a chunk (256) of it", s.steps)
		}
	}
	if n < 10_000 || sum != n || len(s.steps) < 4 {
		t.Fatalf("pruned %d events in steps %v, want at least 10000 in 4 or more steps", n, s.steps)
	}
}
