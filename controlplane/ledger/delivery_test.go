package ledger

import (
	"errors"
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func TestDeliveryCursorsOnlyMoveForward(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	adv := func(dest string, seq, delivered uint64) {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS, &storev1.AdvanceCursors{
			Cursors: []*storev1.DeliveryCursor{{Destination: dest, Seq: seq, Delivered: delivered}},
		}))
	}
	adv("shop", 10, 9)
	adv("shop", 7, 1) // a stale leader's advance: counters add, the seq stays
	adv("erp", 3, 2)
	c, ok, err := l.DeliveryCursor("shop")
	if err != nil || !ok {
		t.Fatalf("DeliveryCursor = %v, %v", ok, err)
	}
	if c.GetSeq() != 10 || c.GetDelivered() != 10 {
		t.Fatalf("cursor = seq %d delivered %d, want 10, 10", c.GetSeq(), c.GetDelivered())
	}
	all, err := l.DeliveryCursors()
	if err != nil || len(all) != 2 || all[0].GetDestination() != "erp" {
		t.Fatalf("DeliveryCursors = %v, %v", all, err)
	}
	res := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS, &storev1.AdvanceCursors{
		Cursors: []*storev1.DeliveryCursor{{Destination: ""}},
	}))
	if err, _ := res.(error); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("empty destination: result %v, want ErrInvalidCommand", res)
	}
}

func TestDeadLettersKeepAttemptsAndResolve(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	put := func(d *storev1.DeadLetter) {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_DEAD_LETTERS, &storev1.PutDeadLetters{DeadLetters: []*storev1.DeadLetter{d}}))
	}
	id1 := DeadLetterID("shop", "stock", 5)
	if id1 != DeadLetterID("shop", "stock", 5) || id1 == DeadLetterID("shop", "stock", 6) {
		t.Fatal("DeadLetterID is not a deterministic function of (destination, route, seq)")
	}
	put(&storev1.DeadLetter{Id: id1, Destination: "shop", Route: "stock", Seq: 5, Keys: map[string]string{"sku": "A"},
		Error: "HTTP 400: bad sku", Attempts: []*storev1.DeliveryAttempt{{Status: 400}}})
	put(&storev1.DeadLetter{Id: DeadLetterID("shop", "stock", 9), Destination: "shop", Route: "stock", Seq: 9, Keys: map[string]string{"sku": "B"}, Error: "no such key: qty"})
	put(&storev1.DeadLetter{Id: DeadLetterID("erp", "po", 2), Destination: "erp", Route: "po", Seq: 2, Error: "HTTP 422"})

	// Retry then fail again: the attempts accumulate.
	res := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{Ids: []string{id1}, State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}))
	if r := res.(*storev1.ResolveDeadLettersResult); r.GetResolved() != 1 {
		t.Fatalf("resolve one: %v", r)
	}
	d, _, _ := l.DeadLetter(id1)
	if d.GetState() != storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING {
		t.Fatalf("state %s after retry", d.GetState())
	}
	if r, err := l.RetryingDeadLetters("shop"); err != nil || len(r) != 1 || r[0].GetId() != id1 {
		t.Fatalf("RetryingDeadLetters = %v, %v; want %s", r, err, id1)
	}
	put(&storev1.DeadLetter{Id: id1, Destination: "shop", Route: "stock", Seq: 5, Keys: map[string]string{"sku": "A"},
		Error: "HTTP 400: still bad", Attempts: []*storev1.DeliveryAttempt{{Status: 400}, {Status: 400}}})
	d, _, _ = l.DeadLetter(id1)
	if len(d.GetAttempts()) != 3 || d.GetState() != storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN || d.GetError() != "HTTP 400: still bad" {
		t.Fatalf("after second failure: %d attempts, state %s, error %q", len(d.GetAttempts()), d.GetState(), d.GetError())
	}
	if r, _ := l.RetryingDeadLetters("shop"); len(r) != 0 {
		t.Fatalf("a failed retry is still indexed as retrying: %v", r)
	}
	if !d.GetCreatedAt().AsTime().Equal(at(1)) {
		t.Fatalf("created_at %v, want the first put's %v", d.GetCreatedAt().AsTime(), at(1))
	}

	got, err := l.DeadLetters(DeadLetterFilter{Destination: "shop", ErrorContains: "NO SUCH"})
	if err != nil || len(got) != 1 || got[0].GetSeq() != 9 {
		t.Fatalf("filter by error: %v, %v", got, err)
	}
	got, _ = l.DeadLetters(DeadLetterFilter{Keys: map[string]string{"sku": "A"}})
	if len(got) != 1 || got[0].GetId() != id1 {
		t.Fatalf("filter by key: %v", got)
	}

	// Retry every open one of a destination.
	res = lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{Destination: "shop", State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}))
	if r := res.(*storev1.ResolveDeadLettersResult); r.GetResolved() != 2 {
		t.Fatalf("resolve all of shop: %v", r)
	}
	if r, _ := l.RetryingDeadLetters("shop"); len(r) != 2 {
		t.Fatalf("RetryingDeadLetters after retry all = %d, want 2", len(r))
	}
	if r, _ := l.RetryingDeadLetters("erp"); len(r) != 0 {
		t.Fatalf("RetryingDeadLetters(erp) = %v, want none", r)
	}
	got, _ = l.DeadLetters(DeadLetterFilter{States: []storev1.DeadLetterState{storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN}})
	if len(got) != 1 || got[0].GetDestination() != "erp" {
		t.Fatalf("open after retry all: %v", got)
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{Ids: []string{id1}, State: storev1.DeadLetterState_DEAD_LETTER_STATE_DELIVERED}))
	if r, _ := l.RetryingDeadLetters("shop"); len(r) != 1 || r[0].GetId() == id1 {
		t.Fatalf("RetryingDeadLetters after one delivered = %v", r)
	}
	// A delivered dead letter is final.
	res = lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{Ids: []string{id1}, State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}))
	if r := res.(*storev1.ResolveDeadLettersResult); r.GetResolved() != 0 {
		t.Fatalf("retrying a delivered dead letter moved it: %v", r)
	}
	testSnapshotRestore(t, l)
}

func TestReplayAndSeqAtTime(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	for i := range 5 {
		lg.ingest(l, "a1", agentEvent(uint64(i+1), id("a1", i), "sku", "S"))
	}
	// Event seq n was applied at index n: committed at at(n).
	for _, tc := range []struct {
		idx  uint64
		want uint64
	}{{0, 1}, {3, 3}, {5, 5}, {6, 6}} {
		got, err := l.SeqAtTime(at(tc.idx))
		if err != nil || got != tc.want {
			t.Fatalf("SeqAtTime(at(%d)) = %d, %v; want %d", tc.idx, got, err, tc.want)
		}
	}
	start := &storev1.StartReplay{Id: "rp1", Route: "stock", Destination: "shop", FromSeq: 2, ToSeq: 5, Keys: map[string]string{"sku": "S"}}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_START_REPLAY, start))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS, &storev1.AdvanceCursors{
		Replays: []*storev1.ReplayProgress{{Id: "rp1", NextSeq: 4, Sent: 2}, {Id: "unknown", NextSeq: 9}},
	}))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS, &storev1.AdvanceCursors{
		Replays: []*storev1.ReplayProgress{{Id: "rp1", NextSeq: 6, Sent: 2, Done: true}},
	}))
	r, ok, err := l.Replay("rp1")
	if err != nil || !ok {
		t.Fatalf("Replay: %v, %v", ok, err)
	}
	if r.GetNextSeq() != 6 || r.GetSent() != 4 || !r.GetDone() || r.GetReplay().GetRoute() != "stock" {
		t.Fatalf("replay record %v", r)
	}
	if _, ok, _ := l.Replay("unknown"); ok {
		t.Fatal("progress of an unknown replay created a record")
	}
	res := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_START_REPLAY, &storev1.StartReplay{Id: "rp2", Route: "r", Destination: "d", FromSeq: 5, ToSeq: 4}))
	if err, _ := res.(error); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("empty range: result %v, want ErrInvalidCommand", res)
	}
	cp := testSnapshotRestore(t, l)
	if r, ok, _ := cp.Replay("rp1"); !ok || r.GetSent() != 4 {
		t.Fatalf("replay lost by snapshot/restore: %v", r)
	}
}
