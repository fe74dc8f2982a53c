package ledger

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// t0 is the leader append time used by tests; entry i is appended at t0 + i seconds.
var t0 = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

func at(index uint64) time.Time { return t0.Add(time.Duration(index) * time.Second) }

// newLedger opens a ledger that is closed when the test ends: in memory, or on disk
// in a temp dir when disk is true.
func newLedger(t testing.TB, disk bool) *Ledger {
	t.Helper()
	opts := Options{InMemory: !disk}
	if disk {
		opts.Dir = t.TempDir()
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func command(t testing.TB, typ storev1.CommandType, msg proto.Message) *storev1.Command {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &storev1.Command{Type: typ, Payload: b}
}

func ingestCmd(t testing.TB, agent string, evs ...*storev1.AgentEvent) *storev1.Command {
	return command(t, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, &storev1.IngestBatch{AgentId: agent, Events: evs})
}

// agentEvent makes an inventory level event; keys are name, value pairs.
func agentEvent(seq uint64, id string, keys ...string) *storev1.AgentEvent {
	ev := &eventv1.Event{
		Id:      id,
		Type:    "inventory.level",
		Keys:    map[string]string{},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "SKU", Location: "WH1", OnHand: "1"}},
	}
	for i := 0; i+1 < len(keys); i += 2 {
		ev.Keys[keys[i]] = keys[i+1]
	}
	return &storev1.AgentEvent{AgentSeq: seq, Event: ev}
}

func withType(ae *storev1.AgentEvent, typ string) *storev1.AgentEvent {
	ae.Event.Type = typ
	return ae
}

// raftLog is a sequence of commands applied at consecutive indexes from 1, kept so tests
// can replay it.
type raftLog struct {
	t    testing.TB
	cmds []*storev1.Command
}

// apply applies cmd to l at the next index of lg and returns its result.
func (lg *raftLog) apply(l *Ledger, cmd *storev1.Command) any {
	lg.t.Helper()
	lg.cmds = append(lg.cmds, cmd)
	idx := uint64(len(lg.cmds))
	res, err := l.Apply(idx, at(idx), cmd)
	if err != nil {
		lg.t.Fatalf("Apply(%d, %s): %v", idx, cmd.GetType(), err)
	}
	return res
}

func (lg *raftLog) ingest(l *Ledger, agent string, evs ...*storev1.AgentEvent) *storev1.IngestResult {
	lg.t.Helper()
	res, ok := lg.apply(l, ingestCmd(lg.t, agent, evs...)).(*storev1.IngestResult)
	if !ok {
		lg.t.Fatalf("ingest result is not an *IngestResult")
	}
	return res
}

func mustHash(t testing.TB, l *Ledger) string {
	t.Helper()
	h, err := l.Hash()
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return h
}

func snapshotBytes(t testing.TB, l *Ledger) []byte {
	t.Helper()
	s, err := l.OpenSnapshot()
	if err != nil {
		t.Fatalf("OpenSnapshot: %v", err)
	}
	defer s.Release()
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil {
		t.Fatalf("Snapshot.WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// testSnapshotRestore snapshots l, restores the stream into a fresh on-disk ledger and
// checks that the copy has the same Hash, AppliedIndex and LastSeq. It returns the copy.
func testSnapshotRestore(t *testing.T, l *Ledger) *Ledger {
	t.Helper()
	data := snapshotBytes(t, l)
	if idx, err := VerifySnapshot(bytes.NewReader(data)); err != nil || idx != l.AppliedIndex() {
		t.Fatalf("VerifySnapshot = %d, %v; want %d, nil", idx, err, l.AppliedIndex())
	}
	cp := newLedger(t, true)
	if err := cp.Restore(bytes.NewReader(data)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, want := mustHash(t, cp), mustHash(t, l); got != want {
		t.Fatalf("restored Hash %s, want %s", got, want)
	}
	if cp.AppliedIndex() != l.AppliedIndex() || cp.LastSeq() != l.LastSeq() {
		t.Fatalf("restored AppliedIndex, LastSeq = %d, %d; want %d, %d", cp.AppliedIndex(), cp.LastSeq(), l.AppliedIndex(), l.LastSeq())
	}
	return cp
}

func listAll(t testing.TB, l *Ledger, f Filter, from uint64, page int) []*eventv1.CommittedEvent {
	t.Helper()
	var out []*eventv1.CommittedEvent
	for range 100000 {
		evs, next, err := l.ListEvents(f, from, page)
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		if len(evs) > page {
			t.Fatalf("ListEvents returned %d events, limit %d", len(evs), page)
		}
		out = append(out, evs...)
		if next == 0 {
			return out
		}
		if len(evs) != page {
			t.Fatalf("ListEvents returned a short page (%d of %d) but nextSeq %d", len(evs), page, next)
		}
		if last := evs[len(evs)-1].GetSeq(); next <= last {
			t.Fatalf("nextSeq %d not after last returned %d", next, last)
		}
		from = next
	}
	t.Fatal("ListEvents pagination does not end")
	return nil
}

func seqsOf(evs []*eventv1.CommittedEvent) []uint64 {
	s := make([]uint64, len(evs))
	for i, e := range evs {
		s[i] = e.GetSeq()
	}
	return s
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func id(agent string, n int) string { return fmt.Sprintf("%s/erp/%06d", agent, n) }
