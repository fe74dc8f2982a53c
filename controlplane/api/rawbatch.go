package api

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// UplinkCodec is the protobuf codec of the uplink handler (connect.WithCodec). It
// decodes like Connect's own, and for a StreamRequest that carries a batch it also keeps
// the batch's wire bytes, as the batch's unknown fields, so the leader can put each
// event into the raft entry exactly as the agent sent it instead of encoding the whole
// batch again: an uplink OutboxEvent {seq = 1, event = 2} has the wire form of a store
// AgentEvent {agent_seq = 1, event = 2}. Re-encoding was about a tenth of the leader's
// CPU (docs/performance.md). Nothing marshals a received StreamRequest again (agents
// are redirected to the leader, not forwarded), so the kept bytes never leak onto a
// wire.
type UplinkCodec struct{}

// Name is the codec Connect's own protobuf codec registers, which this one replaces.
func (UplinkCodec) Name() string { return "proto" }

// Marshal encodes m like Connect's protobuf codec.
func (UplinkCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("uplink codec: %T is not a protobuf message", m)
	}
	return proto.Marshal(pm)
}

// Unmarshal decodes data into m and keeps a batch's bytes (see UplinkCodec).
func (UplinkCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("uplink codec: %T is not a protobuf message", m)
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return err
	}
	if req, ok := m.(*uplinkv1.StreamRequest); ok && req.GetBatch() != nil {
		keepBatchBytes(data, req.GetBatch())
	}
	return nil
}

// keepBatchBytes stores a copy of the encoded batch in b's unknown fields when data is
// a StreamRequest holding only that batch, once, and the batch holds only its events:
// then the kept bytes are exactly b's events, in order. Anything else (more fields, a
// newer agent's additions) keeps nothing and the leader encodes the batch itself.
func keepBatchBytes(data []byte, b *uplinkv1.Batch) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 || num != 2 || typ != protowire.BytesType {
		return
	}
	v, m := protowire.ConsumeBytes(data[n:])
	if m < 0 || n+m != len(data) {
		return
	}
	if events, ok := batchEvents(v); !ok || len(events) != len(b.GetEvents()) {
		return
	}
	b.ProtoReflect().SetUnknown(protoreflect.RawFields(slices.Clone(v)))
}

// batchEvents splits an encoded Batch into its encoded events; ok is false if it holds
// anything else.
func batchEvents(v []byte) (events [][]byte, ok bool) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return nil, false
		}
		ev, m := protowire.ConsumeBytes(v[n:])
		if m < 0 {
			return nil, false
		}
		events = append(events, ev)
		v = v[n+m:]
	}
	return events, true
}

// rawEvents returns the encoded events the codec kept for b, one per b.Events, or nil.
func rawEvents(b *uplinkv1.Batch) [][]byte {
	events, ok := batchEvents(b.ProtoReflect().GetUnknown())
	if !ok || len(events) != len(b.GetEvents()) || len(events) == 0 {
		return nil
	}
	return events
}

// appendIngestEvent appends one events entry (field 2) of a store IngestBatch holding
// raw, an encoded uplink OutboxEvent.
func appendIngestEvent(payload, raw []byte) []byte {
	payload = protowire.AppendTag(payload, 2, protowire.BytesType)
	return protowire.AppendBytes(payload, raw)
}

// sentEventLen returns the encoded length of the event in raw[i], an encoded uplink
// OutboxEvent (the sum over its event fields, which proto merges); ok is false when raw
// is nil.
func sentEventLen(raw [][]byte, i int) (n int, ok bool) {
	if raw == nil {
		return 0, false
	}
	v := raw[i]
	for len(v) > 0 {
		num, typ, m := protowire.ConsumeTag(v)
		if m < 0 {
			return 0, false
		}
		l := protowire.ConsumeFieldValue(num, typ, v[m:])
		if l < 0 {
			return 0, false
		}
		if num == 2 && typ == protowire.BytesType {
			b, _ := protowire.ConsumeBytes(v[m:])
			n += len(b)
		}
		v = v[m+l:]
	}
	return n, true
}
