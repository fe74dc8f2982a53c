package ledger

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func wantResult(t *testing.T, got *storev1.IngestResult, committedSeq uint64, committed, dups uint32, last uint64) {
	t.Helper()
	want := &storev1.IngestResult{CommittedSeq: committedSeq, Committed: committed, Duplicates: dups, LastLedgerSeq: last}
	got = proto.CloneOf(got)
	got.Conflicts = nil // checked by the tests that expect them
	if !proto.Equal(got, want) {
		t.Fatalf("IngestResult = %v, want %v", got, want)
	}
}

func TestIngestOrderAndGapFreeSeqs(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	wantResult(t, lg.ingest(l, "a1", agentEvent(1, id("a1", 1)), agentEvent(2, id("a1", 2))), 2, 2, 0, 2)
	wantResult(t, lg.ingest(l, "a2", agentEvent(7, id("a2", 7))), 7, 1, 0, 3)
	wantResult(t, lg.ingest(l, "a1", agentEvent(3, id("a1", 3)), agentEvent(5, id("a1", 5))), 5, 2, 0, 5)

	evs, next, err := l.ListEvents(Filter{}, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if next != 0 {
		t.Errorf("nextSeq = %d at the end, want 0", next)
	}
	wantIDs := []string{id("a1", 1), id("a1", 2), id("a2", 7), id("a1", 3), id("a1", 5)}
	wantIdx := []uint64{1, 1, 2, 3, 3}
	if len(evs) != len(wantIDs) {
		t.Fatalf("got %d events, want %d", len(evs), len(wantIDs))
	}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) || ev.GetEvent().GetId() != wantIDs[i] {
			t.Errorf("event %d: seq %d id %q, want seq %d id %q", i, ev.GetSeq(), ev.GetEvent().GetId(), i+1, wantIDs[i])
		}
		if got := ev.GetCommittedAt().AsTime(); !got.Equal(at(wantIdx[i])) {
			t.Errorf("event %d committed_at %v, want the append time of entry %d", i, got, wantIdx[i])
		}
	}
	if evs[2].GetAgent() != "a2" || evs[2].GetAgentSeq() != 7 {
		t.Errorf("event 3 agent %q seq %d", evs[2].GetAgent(), evs[2].GetAgentSeq())
	}
	if l.LastSeq() != 5 || l.AppliedIndex() != 3 {
		t.Errorf("LastSeq, AppliedIndex = %d, %d; want 5, 3", l.LastSeq(), l.AppliedIndex())
	}

	agents, err := l.Agents()
	if err != nil {
		t.Fatal(err)
	}
	want := []*storev1.AgentRecord{
		{Id: "a1", EnrolledAt: ts(at(1)), CommittedSeq: 5, EventsCommitted: 4},
		{Id: "a2", EnrolledAt: ts(at(2)), CommittedSeq: 7, EventsCommitted: 1},
	}
	if len(agents) != 2 || !proto.Equal(agents[0], want[0]) || !proto.Equal(agents[1], want[1]) {
		t.Errorf("Agents = %v, want %v", agents, want)
	}
	ev, ok, err := l.EventByID(id("a2", 7))
	if err != nil || !ok || ev.GetSeq() != 3 {
		t.Errorf("EventByID = %v, %v, %v; want seq 3", ev, ok, err)
	}
	if _, ok, _ := l.EventByID("nope"); ok {
		t.Error("EventByID(nope) found something")
	}
	if _, ok, _ := l.EventByID(""); ok {
		t.Error(`EventByID("") found something`)
	}
	testSnapshotRestore(t, l)
}

func TestIngestDedupByID(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	wantResult(t, lg.ingest(l, "a1", agentEvent(1, "e1"), agentEvent(2, "e2")), 2, 2, 0, 2)
	// Same ids under new agent seqs (e.g. the agent lost its outbox cursor): duplicates,
	// but committed_seq moves so the agent can drop them.
	wantResult(t, lg.ingest(l, "a1", agentEvent(3, "e2"), agentEvent(4, "e3"), agentEvent(5, "e1")), 5, 1, 2, 3)
	// Another agent sending an id that exists commits: ids are scoped by agent.
	wantResult(t, lg.ingest(l, "a2", agentEvent(1, "e3")), 1, 1, 0, 4)
	// Within one batch.
	wantResult(t, lg.ingest(l, "a1", agentEvent(6, "e4"), agentEvent(7, "e4"), agentEvent(8, "e5"), agentEvent(9, "e5")), 9, 2, 2, 6)

	rec, ok, err := l.Agent("a1")
	if err != nil || !ok {
		t.Fatalf("Agent(a1) = %v, %v", ok, err)
	}
	if rec.GetEventsCommitted() != 5 || rec.GetDuplicates() != 4 || rec.GetCommittedSeq() != 9 || rec.GetConflicts() != 0 {
		t.Errorf("a1 record = %v", rec)
	}
	evs, _, _ := l.ListEvents(Filter{}, 1, 100)
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.GetAgent()+":"+e.GetEvent().GetId())
	}
	if !slices.Equal(ids, []string{"a1:e1", "a1:e2", "a1:e3", "a2:e3", "a1:e4", "a1:e5"}) {
		t.Errorf("ledger ids = %v", ids)
	}
	if ev, ok, err := l.AgentEventByID("a2", "e3"); err != nil || !ok || ev.GetSeq() != 4 {
		t.Errorf("AgentEventByID(a2, e3) = %v, %v, %v; want seq 4", ev, ok, err)
	}
}

// TestIngestIDConflicts: an id an agent committed, sent again by it with other content,
// is not committed and not dropped silently: the result and the agent's record name the
// id and what differs; committed_seq passes it. The same content is a duplicate even
// when its time, trace or source differ; another agent's event never conflicts.
func TestIngestIDConflicts(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	level := func(seq uint64, id, onHand string) *storev1.AgentEvent {
		ae := agentEvent(seq, id)
		ae.Event.GetInventoryLevel().OnHand = onHand
		return ae
	}
	wantResult(t, lg.ingest(l, "a1", level(1, "row-42", "1")), 1, 1, 0, 1)
	res := lg.ingest(l, "a1", level(2, "row-42", "999"), level(3, "row-43", "5"))
	wantResult(t, res, 3, 1, 0, 2)
	if len(res.GetConflicts()) != 1 {
		t.Fatalf("conflicts = %v, want one", res.GetConflicts())
	}
	c := res.GetConflicts()[0]
	if c.GetId() != "row-42" || c.GetAgentSeq() != 2 || c.GetExistingSeq() != 1 || c.GetDiffers() != `inventoryLevel.onHand: "1" -> "999"` {
		t.Errorf("conflict = %v", c)
	}
	// Within one batch: the first stands.
	res = lg.ingest(l, "a1", level(4, "row-44", "7"), level(5, "row-44", "8"))
	wantResult(t, res, 5, 1, 0, 3)
	if len(res.GetConflicts()) != 1 || res.GetConflicts()[0].GetExistingSeq() != 3 || res.GetConflicts()[0].GetAgentSeq() != 5 {
		t.Errorf("in-batch conflict = %v", res.GetConflicts())
	}
	// Same content with another time, trace and source: a duplicate.
	again := level(6, "row-42", "1")
	again.Event.OccurredAt = timestamppb.New(time.Unix(1e9, 0))
	again.Event.Trace = &eventv1.TraceContext{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	again.Event.Source = &eventv1.Source{Agent: "a1", Connector: "other", Position: "p"}
	wantResult(t, lg.ingest(l, "a1", again), 6, 0, 1, 3)
	// Another agent's same id with other content commits.
	wantResult(t, lg.ingest(l, "a2", level(1, "row-42", "999")), 1, 1, 0, 4)

	rec, _, err := l.Agent("a1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.GetConflicts() != 2 || len(rec.GetRecentConflicts()) != 2 || rec.GetRecentConflicts()[0].GetId() != "row-42" ||
		!rec.GetRecentConflicts()[0].GetAt().AsTime().Equal(at(2)) {
		t.Errorf("a1 record = %v", rec)
	}
	ev, ok, err := l.AgentEventByID("a1", "row-42")
	if err != nil || !ok || ev.GetEvent().GetInventoryLevel().GetOnHand() != "1" {
		t.Errorf("a1's row-42 = %v, %v, %v; want the first content", ev, ok, err)
	}
	testSnapshotRestore(t, l)
}

// TestIngestIncarnations: a batch of another incarnation than the agent's, or of a
// revoked agent, commits nothing; a replacing enrollment starts a new seq space.
func TestIngestIncarnations(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	put := func(id, name string, replace bool) {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, &storev1.PutToken{
			Id: id, SecretSha256: []byte("h"), Kind: "agent", AgentName: name, Replace: replace,
		}))
	}
	consume := func(id string) *storev1.ConsumeTokenResult {
		r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{Id: id, SecretSha256: []byte("h")})).(*storev1.ConsumeTokenResult)
		return r
	}
	ingest := func(inc uint64, evs ...*storev1.AgentEvent) *storev1.IngestResult {
		r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, &storev1.IngestBatch{AgentId: "x", Incarnation: inc, Events: evs})).(*storev1.IngestResult)
		return r
	}
	put("t1", "x", false)
	if r := consume("t1"); r.GetError() != "" || r.GetIncarnation() != 1 {
		t.Fatalf("first enrollment = %v", r)
	}
	if r := ingest(1, agentEvent(1, "e1"), agentEvent(2, "e2")); r.GetCommitted() != 2 || r.GetError() != "" {
		t.Fatalf("ingest = %v", r)
	}
	put("t2", "x", false)
	if r := consume("t2"); !strings.Contains(r.GetError(), "already enrolled") {
		t.Fatalf("re-enrollment without replace = %v, want refused", r)
	}
	put("t3", "x", true)
	if r := consume("t3"); r.GetError() != "" || r.GetIncarnation() != 2 {
		t.Fatalf("replacing enrollment = %v", r)
	}
	if r := ingest(1, agentEvent(3, "e3")); r.GetCommitted() != 0 || !strings.Contains(r.GetError(), "incarnation 1, which is retired") {
		t.Fatalf("old incarnation's batch = %v, want refused", r)
	}
	// The new incarnation counts from 1 again, and its seq 1 is not taken for committed.
	if r := ingest(2, agentEvent(1, "n1")); r.GetCommitted() != 1 || r.GetCommittedSeq() != 1 {
		t.Fatalf("new incarnation's batch = %v", r)
	}
	r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_REVOKE_AGENT, &storev1.RevokeAgent{AgentId: "x", Reason: "stolen laptop"})).(*storev1.AgentCommandResult)
	if r.GetError() != "" {
		t.Fatalf("revoke = %v", r)
	}
	if r := ingest(2, agentEvent(2, "n2")); r.GetCommitted() != 0 || !strings.Contains(r.GetError(), "stolen laptop") {
		t.Fatalf("revoked agent's batch = %v, want refused", r)
	}
	rec, _, _ := l.Agent("x")
	if !rec.GetRevoked() || rec.GetIncarnation() != 2 || rec.GetReplacements() != 1 || rec.GetEventsCommitted() != 3 {
		t.Errorf("record = %v", rec)
	}
	testSnapshotRestore(t, l)
}

func TestIngestSkipsCommittedAgentSeqs(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	wantResult(t, lg.ingest(l, "a1", agentEvent(1, "e1"), agentEvent(2, "e2"), agentEvent(3, "e3")), 3, 3, 0, 3)
	// A re-sent window overlapping what is committed: only seq 4 is new, even though
	// the ids of 2 and 3 differ this time.
	wantResult(t, lg.ingest(l, "a1", agentEvent(2, "x2"), agentEvent(3, "x3"), agentEvent(4, "e4")), 4, 1, 2, 4)
	// Out of order inside a batch: 6 then 5; 5 is at or below committed 6.
	wantResult(t, lg.ingest(l, "a1", agentEvent(6, "e6"), agentEvent(5, "e5")), 6, 1, 1, 5)
	if _, ok, _ := l.EventByID("x2"); ok {
		t.Error("x2 was committed though its agent seq was")
	}
	// Other agents' seqs are independent.
	wantResult(t, lg.ingest(l, "a2", agentEvent(1, "b1")), 1, 1, 0, 6)
}

func TestIngestEmptyAndDuplicateOnlyBatches(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	wantResult(t, lg.ingest(l, "a1"), 0, 0, 0, 0)
	rec, ok, _ := l.Agent("a1")
	if !ok || !rec.GetEnrolledAt().AsTime().Equal(at(1)) {
		t.Errorf("empty batch did not create the agent record: %v", rec)
	}
	wantResult(t, lg.ingest(l, "a1", agentEvent(1, "e1")), 1, 1, 0, 1)
	ch := l.Changed()
	wantResult(t, lg.ingest(l, "a1", agentEvent(1, "e1")), 1, 0, 1, 1)
	select {
	case <-ch:
		t.Error("Changed fired for a batch that committed nothing")
	default:
	}
	lg.ingest(l, "a1", agentEvent(2, "e2"))
	select {
	case <-ch:
	default:
		t.Error("Changed did not fire after events were committed")
	}
}

// keyedLedger fills a ledger with n events over a few SKUs, locations and types, and
// returns the events it sent, in commit order.
// keyedLedger commits n events in batches of batchSize (a batch over chunkMaxEvents
// spans several log chunks).
func keyedLedger(t *testing.T, n, batchSize int) (*Ledger, []*eventv1.Event) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	types := []string{"inventory.level", "price", "item"}
	var sent []*eventv1.Event
	var batch []*storev1.AgentEvent
	for i := 1; i <= n; i++ {
		ae := withType(agentEvent(uint64(i), id("a1", i),
			"sku", fmt.Sprintf("SKU-%d", i%7), "location", fmt.Sprintf("WH%d", i%3)), types[i%len(types)])
		if i%5 == 0 {
			ae.Event.Keys["order"] = fmt.Sprintf("SO-%d", i%4)
		}
		sent = append(sent, ae.Event)
		batch = append(batch, ae)
		if len(batch) == batchSize || i == n {
			lg.ingest(l, "a1", batch...)
			batch = nil
		}
	}
	return l, sent
}

func TestListEventsByKeysAndType(t *testing.T) {
	for _, batchSize := range []int{17, 300} {
		t.Run(fmt.Sprintf("batch=%d", batchSize), func(t *testing.T) { testListEvents(t, batchSize) })
	}
}

func testListEvents(t *testing.T, batchSize int) {
	l, sent := keyedLedger(t, 400, batchSize)
	filters := []Filter{
		{},
		{Type: "price"},
		{Keys: map[string]string{"sku": "SKU-3"}},
		{Keys: map[string]string{"sku": "SKU-3", "location": "WH1"}},
		{Keys: map[string]string{"sku": "SKU-3"}, Type: "item"},
		{Keys: map[string]string{"order": "SO-1", "location": "WH2"}, Type: "inventory.level"},
		{Keys: map[string]string{"sku": "SKU-99"}},
		{Type: "nothing"},
		{Keys: map[string]string{"sku": "SKU-3", "location": "WH9"}},
	}
	for _, f := range filters {
		var want []uint64
		for i, ev := range sent {
			if f.Type != "" && ev.GetType() != f.Type {
				continue
			}
			match := true
			for k, v := range f.Keys {
				match = match && ev.GetKeys()[k] == v
			}
			if match {
				want = append(want, uint64(i+1))
			}
		}
		for _, page := range []int{1, 3, 10, 1000} {
			for _, from := range []uint64{0, 1, 150, 256, 257, 300, 401} {
				got := listAll(t, l, f, from, page)
				w := slices.DeleteFunc(slices.Clone(want), func(s uint64) bool { return s < from })
				if !slices.Equal(seqsOf(got), w) {
					t.Fatalf("filter %v from %d page %d: seqs %v, want %v", f, from, page, seqsOf(got), w)
				}
				for _, ev := range got {
					if want := sent[ev.GetSeq()-1]; !proto.Equal(ev.GetEvent(), want) {
						t.Fatalf("seq %d is %v, want %v", ev.GetSeq(), ev.GetEvent(), want)
					}
				}
			}
		}
	}
	evs, _, err := l.ListEvents(Filter{Keys: map[string]string{"sku": "SKU-3"}}, 1, 0)
	if err != nil || len(evs) != min(DefaultListLimit, 57) {
		t.Errorf("limit 0 returned %d events, %v", len(evs), err)
	}
	for i, ev := range sent {
		got, ok, err := l.EventByID(ev.GetId())
		if err != nil || !ok || got.GetSeq() != uint64(i+1) || got.GetAgent() != "a1" || got.GetAgentSeq() != uint64(i+1) || !proto.Equal(got.GetEvent(), ev) {
			t.Fatalf("EventByID(%s) = %v, %v, %v; want seq %d", ev.GetId(), got, ok, err, i+1)
		}
	}
}

func TestIndexKeysAreUnambiguous(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	// "a=b" + "c" and "a" + "b=c" would share a prefix with a naive "name=value" layout.
	e1 := agentEvent(1, "e1", "a=b", "c")
	e2 := agentEvent(2, "e2", "a", "b=c")
	e3 := agentEvent(3, "e3", "a", "b\x00")
	lg.ingest(l, "a1", e1, e2, e3)
	for _, tc := range []struct {
		f    Filter
		want []uint64
	}{
		{Filter{Keys: map[string]string{"a=b": "c"}}, []uint64{1}},
		{Filter{Keys: map[string]string{"a": "b=c"}}, []uint64{2}},
		{Filter{Keys: map[string]string{"a": "b"}}, nil},
		{Filter{Keys: map[string]string{"a": "b\x00"}}, []uint64{3}},
	} {
		if got := seqsOf(listAll(t, l, tc.f, 1, 10)); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.f.Keys, got, tc.want)
		}
	}
}

func TestReplayOfAppliedEntriesChangesNothing(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1"), agentEvent(2, "e2"))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, &storev1.PutToken{Id: "t1", SecretSha256: []byte("h"), ExpiresAt: ts(at(100))}))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{Id: "t1", SecretSha256: []byte("h"), At: ts(at(3))}))
	lg.ingest(l, "a1", agentEvent(3, "e3"))
	before := mustHash(t, l)
	for i, cmd := range lg.cmds {
		idx := uint64(i + 1)
		res, err := l.Apply(idx, at(idx), cmd)
		if res != nil || err != nil {
			t.Fatalf("replay of entry %d = %v, %v; want nil, nil", idx, res, err)
		}
	}
	if after := mustHash(t, l); after != before {
		t.Fatal("replaying applied entries changed the state")
	}
	// A second ledger applying the same log reaches the same state.
	other := newLedger(t, true)
	for i, cmd := range lg.cmds {
		if _, err := other.Apply(uint64(i+1), at(uint64(i+1)), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if mustHash(t, other) != before {
		t.Fatal("two ledgers applying the same log differ")
	}
}

func TestUnknownCommands(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1"))
	before := mustHash(t, l)

	res, err := l.Apply(2, at(2), &storev1.Command{Type: 99, Payload: []byte("future"), Ignorable: true})
	if res != nil || err != nil {
		t.Fatalf("ignorable unknown = %v, %v; want nil, nil", res, err)
	}
	if l.AppliedIndex() != 2 {
		t.Errorf("AppliedIndex = %d after an ignorable entry, want 2", l.AppliedIndex())
	}
	if evs, _, _ := l.ListEvents(Filter{}, 1, 10); len(evs) != 1 {
		t.Errorf("ignorable entry changed the events: %d", len(evs))
	}

	for _, typ := range []storev1.CommandType{99, storev1.CommandType_COMMAND_TYPE_UNSPECIFIED} {
		h := mustHash(t, l)
		_, err = l.Apply(3, at(3), &storev1.Command{Type: typ, Payload: []byte("future")})
		if !errors.Is(err, ErrUnknownCommand) {
			t.Fatalf("unknown type %d: err = %v, want ErrUnknownCommand", typ, err)
		}
		if l.AppliedIndex() != 2 || mustHash(t, l) != h {
			t.Errorf("unknown type %d changed the state", typ)
		}
	}
	if before == mustHash(t, l) {
		t.Error("the ignorable entry did not record its index")
	}
}

func TestUndecodablePayloadIsAnError(t *testing.T) {
	l := newLedger(t, false)
	for _, typ := range []storev1.CommandType{
		storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN,
		storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_TOKEN,
		storev1.CommandType_COMMAND_TYPE_PUT_CA,
	} {
		_, err := l.Apply(1, at(1), &storev1.Command{Type: typ, Payload: []byte{0xff, 0xff, 0xff}})
		if err == nil || !strings.Contains(err.Error(), "decode") {
			t.Errorf("%s with a bad payload: err = %v", typ, err)
		}
	}
	if l.AppliedIndex() != 0 {
		t.Errorf("AppliedIndex = %d", l.AppliedIndex())
	}
	if _, err := l.Apply(1, at(1), nil); err == nil {
		t.Error("nil command: no error")
	}
}

// TestMaxBatchFitsWhole builds the largest batch the uplink lets through with events
// that pass canonical validation (16 keys, 128-byte ids) and checks it commits whole.
func TestMaxBatchFitsWhole(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	res := lg.ingest(l, "a1", maxBatch(t, 1)...)
	wantResult(t, res, MaxBatchEvents, MaxBatchEvents, 0, MaxBatchEvents)
}

// maxBatch returns the largest batch the uplink lets through with events that pass
// canonical validation (16 distinct keys, 128-byte ids), agent seqs from seq.
func maxBatch(t testing.TB, seq uint64) []*storev1.AgentEvent {
	t.Helper()
	b := &storev1.IngestBatch{AgentId: "a1"}
	for i := range MaxBatchEvents {
		ae := agentEvent(seq+uint64(i), fmt.Sprintf("%0128d", i))
		for k := range 16 {
			ae.Event.Keys[fmt.Sprintf("key_%02d", k)] = fmt.Sprintf("%d-%d", k, i)
		}
		b.Events = append(b.Events, ae)
	}
	// Pad the payloads to reach MaxBatchBytes.
	pad := (MaxBatchBytes - proto.Size(b)) / MaxBatchEvents
	for _, ae := range b.Events {
		ae.Event.GetInventoryLevel().UnitOfMeasure = strings.Repeat("x", pad-4)
	}
	if n := proto.Size(b); n > MaxBatchBytes || n < MaxBatchBytes-MaxBatchEvents*8 {
		t.Fatalf("batch is %d bytes, want just under %d", n, MaxBatchBytes)
	}
	return b.Events
}

// TestOversizedBatchStopsAtBudget checks that a batch over the apply budget commits a
// prefix, deterministically, and that the rest commits when sent again.
func TestOversizedBatchStopsAtBudget(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	var evs []*storev1.AgentEvent
	for i := range 20 {
		ae := agentEvent(uint64(i+1), fmt.Sprintf("big-%d", i))
		ae.Event.GetInventoryLevel().UnitOfMeasure = strings.Repeat("x", 1000<<10)
		evs = append(evs, ae)
	}
	res := lg.ingest(l, "a1", evs...)
	if res.GetCommitted() == 0 || res.GetCommitted() >= 20 {
		t.Fatalf("oversized batch committed %d events; want a prefix", res.GetCommitted())
	}
	n := res.GetCommitted()
	wantResult(t, res, uint64(n), n, 0, uint64(n))
	// The agent re-sends from committed_seq + 1.
	res = lg.ingest(l, "a1", evs[n:]...)
	if got := res.GetCommittedSeq(); got <= uint64(n) {
		t.Fatalf("re-send made no progress: %v", res)
	}
}

func TestConcurrentReadsDuringApply(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Go(func() {
			f := Filter{}
			if r%2 == 1 {
				f.Keys = map[string]string{"sku": "S1"}
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				evs, _, err := l.ListEvents(f, 1, 50)
				if err != nil {
					t.Error(err)
					return
				}
				for i := 1; i < len(evs); i++ {
					if evs[i].GetSeq() <= evs[i-1].GetSeq() {
						t.Error("events out of order")
					}
				}
				l.Agents()
				l.Hash()
			}
		})
	}
	for i := range 50 {
		lg.ingest(l, "a1", agentEvent(uint64(2*i+1), id("a", 2*i+1), "sku", "S1"), agentEvent(uint64(2*i+2), id("a", 2*i+2), "sku", "S2"))
	}
	close(stop)
	wg.Wait()
	if l.LastSeq() != 100 {
		t.Errorf("LastSeq = %d", l.LastSeq())
	}
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1", "sku", "S1"), agentEvent(2, "e2"))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: "cert", KeyPem: "key"}))
	want := mustHash(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.ListEvents(Filter{}, 1, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("ListEvents after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Apply(9, at(9), ingestCmd(t, "a1")); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}

	l, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := mustHash(t, l); got != want {
		t.Error("state differs after reopen")
	}
	if l.AppliedIndex() != 2 || l.LastSeq() != 2 {
		t.Errorf("AppliedIndex, LastSeq = %d, %d; want 2, 2", l.AppliedIndex(), l.LastSeq())
	}
	if got := seqsOf(listAll(t, l, Filter{Keys: map[string]string{"sku": "S1"}}, 1, 10)); !slices.Equal(got, []uint64{1}) {
		t.Errorf("key index after reopen: %v", got)
	}
	// Raft replays the tail of its log after a restart: nothing changes.
	for i, cmd := range lg.cmds {
		if _, err := l.Apply(uint64(i+1), at(uint64(i+1)), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if mustHash(t, l) != want {
		t.Error("replay after reopen changed the state")
	}
}

func TestEventOverMaxEventBytesStopsBatch(t *testing.T) {
	for _, disk := range []bool{false, true} {
		l := newLedger(t, disk)
		lg := &raftLog{t: t}
		big := agentEvent(2, "big")
		big.Event.GetInventoryLevel().UnitOfMeasure = strings.Repeat("x", MaxEventBytes)
		wantResult(t, lg.ingest(l, "a1", agentEvent(1, "e1"), big, agentEvent(3, "e3")), 1, 1, 0, 1)
		if _, ok, _ := l.EventByID("e3"); ok {
			t.Error("an event after the oversized one was committed")
		}
	}
}
