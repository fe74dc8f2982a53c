package wire

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// TestFieldNumbers pins every hand-coded field number to the generated descriptors:
// renumbering a field in a .proto fails here, not in production.
func TestFieldNumbers(t *testing.T) {
	for _, c := range []struct {
		msg   proto.Message
		field protoreflect.Name
		num   protowire.Number
		kind  protoreflect.Kind
	}{
		{&uplinkv1.StreamRequest{}, "batch", StreamRequestBatch, protoreflect.MessageKind},
		{&uplinkv1.Batch{}, "events", BatchEvents, protoreflect.MessageKind},
		{&uplinkv1.OutboxEvent{}, "seq", OutboxEventSeq, protoreflect.Uint64Kind},
		{&uplinkv1.OutboxEvent{}, "event", OutboxEventEvent, protoreflect.MessageKind},
		{&storev1.IngestBatch{}, "agent_id", IngestBatchAgentID, protoreflect.StringKind},
		{&storev1.IngestBatch{}, "events", IngestBatchEvents, protoreflect.MessageKind},
		{&storev1.IngestBatch{}, "incarnation", IngestBatchIncarnation, protoreflect.Uint64Kind},
		{&storev1.AgentEvent{}, "agent_seq", AgentEventAgentSeq, protoreflect.Uint64Kind},
		{&storev1.AgentEvent{}, "event", AgentEventEvent, protoreflect.MessageKind},
		{&storev1.Command{}, "type", CommandType, protoreflect.EnumKind},
		{&storev1.Command{}, "ignorable", CommandIgnorable, protoreflect.BoolKind},
		{&storev1.Command{}, "payload", CommandPayload, protoreflect.BytesKind},
		{&storev1.Command{}, "proposed_at_unix_nano", CommandProposedAtUnixNano, protoreflect.Int64Kind},
		{&storev1.LogChunk{}, "events", LogChunkEvents, protoreflect.MessageKind},
		{&eventv1.CommittedEvent{}, "seq", CommittedEventSeq, protoreflect.Uint64Kind},
		{&eventv1.CommittedEvent{}, "event", CommittedEventEvent, protoreflect.MessageKind},
		{&eventv1.CommittedEvent{}, "committed_at", CommittedEventCommittedAt, protoreflect.MessageKind},
		{&eventv1.CommittedEvent{}, "agent", CommittedEventAgent, protoreflect.StringKind},
		{&eventv1.CommittedEvent{}, "agent_seq", CommittedEventAgentSeq, protoreflect.Uint64Kind},
		{&eventv1.Event{}, "id", EventID, protoreflect.StringKind},
		{&eventv1.Event{}, "type", EventType, protoreflect.StringKind},
		{&eventv1.Event{}, "keys", EventKeys, protoreflect.MessageKind},
		{&eventv1.Event{}, "occurred_at", EventOccurredAt, protoreflect.MessageKind},
		{&eventv1.Event{}, "source", EventSource, protoreflect.MessageKind},
		{&eventv1.Event{}, "trace", EventTrace, protoreflect.MessageKind},
	} {
		md := c.msg.ProtoReflect().Descriptor()
		f := md.Fields().ByName(c.field)
		if f == nil {
			t.Errorf("%s has no field %s", md.FullName(), c.field)
			continue
		}
		if f.Number() != c.num || f.Kind() != c.kind {
			t.Errorf("%s.%s is field %d (%s); the hand-written codecs use %d (%s)", md.FullName(), c.field, f.Number(), f.Kind(), c.num, c.kind)
		}
	}
	// The payload oneof: its members are fields EventFirstPayload..EventLastPayload,
	// then EventEdiInterchange, EventOrderCancel and EventOrderStatus.
	od := (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	var known []protowire.Number
	for n := EventFirstPayload; n <= EventLastPayload; n++ {
		known = append(known, n)
	}
	known = append(known, EventEdiInterchange, EventOrderCancel, EventOrderStatus)
	if od.Fields().Len() != len(known) {
		t.Errorf("payload has %d members; the codecs know %d", od.Fields().Len(), len(known))
	}
	for i := 0; i < od.Fields().Len() && i < len(known); i++ {
		if n := od.Fields().Get(i).Number(); n != known[i] {
			t.Errorf("payload member %s is field %d, want %d", od.Fields().Get(i).Name(), n, known[i])
		}
	}
	if f := od.Fields().ByName("edi_interchange"); f == nil || f.Number() != EventEdiInterchange {
		t.Errorf("payload member edi_interchange is not field %d", EventEdiInterchange)
	}
	keys := (&eventv1.Event{}).ProtoReflect().Descriptor().Fields().ByName("keys")
	if keys.MapKey().Number() != MapEntryKey || keys.MapValue().Number() != MapEntryValue {
		t.Errorf("map entry fields %d, %d", keys.MapKey().Number(), keys.MapValue().Number())
	}
}

// TestOutboxEventIsAgentEvent: the leader puts an agent's OutboxEvent bytes into the
// raft entry as an AgentEvent. The two messages must stay identical on the wire.
func TestOutboxEventIsAgentEvent(t *testing.T) {
	a := (&uplinkv1.OutboxEvent{}).ProtoReflect().Descriptor().Fields()
	b := (&storev1.AgentEvent{}).ProtoReflect().Descriptor().Fields()
	if a.Len() != b.Len() {
		t.Fatalf("OutboxEvent has %d fields, AgentEvent %d", a.Len(), b.Len())
	}
	for i := 0; i < a.Len(); i++ {
		fa, fb := a.Get(i), b.ByNumber(a.Get(i).Number())
		if fb == nil || fa.Kind() != fb.Kind() || fa.Cardinality() != fb.Cardinality() ||
			(fa.Message() != nil && fa.Message().FullName() != fb.Message().FullName()) {
			t.Errorf("OutboxEvent.%s (field %d) has no twin in AgentEvent: %v", fa.Name(), fa.Number(), fb)
		}
	}
	ev := &eventv1.Event{Id: "e1", Type: "item", Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "S"}}}
	enc, err := proto.Marshal(&uplinkv1.OutboxEvent{Seq: 42, Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	var got storev1.AgentEvent
	if err := proto.Unmarshal(enc, &got); err != nil || got.GetAgentSeq() != 42 || !proto.Equal(got.GetEvent(), ev) {
		t.Fatalf("OutboxEvent bytes read as AgentEvent: %v, %v", &got, err)
	}
}
