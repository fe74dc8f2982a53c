package api

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crossdock/crossdock/internal/canonical"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// UplinkCodec is the protobuf codec of the uplink handler (connect.WithCodec). It
// decodes like Connect's own, except a StreamRequest that is a plain batch (the batch
// field only, holding events only, which is what agents send): that one it does not
// decode. It keeps the batch's wire bytes, as the Batch's unknown fields, and leaves
// Events empty; validateBatch then checks each event in place (canonical.WireValid) and
// puts it into the raft entry exactly as the agent sent it: an uplink OutboxEvent
// {seq = 1, event = 2} has the wire form of a store AgentEvent {agent_seq = 1, event =
// 2}. Decoding every event and encoding the batch again were about a third of the
// leader's CPU (docs/performance.md). Anything unusual is decoded after all and takes
// the slow path. Nothing marshals a received StreamRequest again (agents are redirected
// to the leader, not forwarded); if something did, the kept bytes are the events'
// encoding, so it would write the same batch.
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

// Unmarshal decodes data into m, except a plain batch (see UplinkCodec).
func (UplinkCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("uplink codec: %T is not a protobuf message", m)
	}
	if req, ok := m.(*uplinkv1.StreamRequest); ok {
		if v, ok := plainBatch(data); ok {
			b := &uplinkv1.Batch{}
			if len(v) > 0 {
				b.ProtoReflect().SetUnknown(protoreflect.RawFields(slices.Clone(v)))
			}
			proto.Reset(req)
			req.Msg = &uplinkv1.StreamRequest_Batch{Batch: b}
			return nil
		}
	}
	return proto.Unmarshal(data, pm)
}

// plainBatch returns the encoded Batch when data is a StreamRequest holding only a
// batch, once, and the batch holds only events.
func plainBatch(data []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 || num != 2 || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(data[n:])
	if m < 0 || n+m != len(data) {
		return nil, false
	}
	if _, ok := batchEvents(v, false); !ok {
		return nil, false
	}
	return v, true
}

// batchEvents splits an encoded Batch into its encoded events (or, with keep false,
// only checks that it can be split); ok is false if it holds anything else.
func batchEvents(v []byte, keep bool) (events [][]byte, ok bool) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return nil, false
		}
		ev, m := protowire.ConsumeBytes(v[n:])
		if m < 0 {
			return nil, false
		}
		if keep {
			events = append(events, ev)
		}
		v = v[n+m:]
	}
	return events, true
}

// rawEvents returns the encoded events of a batch the codec did not decode, or nil.
func rawEvents(b *uplinkv1.Batch) [][]byte {
	if len(b.GetEvents()) > 0 {
		return nil
	}
	events, ok := batchEvents(b.ProtoReflect().GetUnknown(), true)
	if !ok || len(events) == 0 {
		return nil
	}
	return events
}

// outboxEvent reads an encoded uplink OutboxEvent written the usual way: seq and event
// at most once each, nothing else.
func outboxEvent(raw []byte) (seq uint64, event []byte, ok bool) {
	var seen uint8
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 || num < 1 || num > 2 || seen&(1<<num) != 0 {
			return 0, nil, false
		}
		seen |= 1 << num
		raw = raw[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			seq, n = protowire.ConsumeVarint(raw)
		case num == 2 && typ == protowire.BytesType:
			event, n = protowire.ConsumeBytes(raw)
		default:
			return 0, nil, false
		}
		if n < 0 {
			return 0, nil, false
		}
		raw = raw[n:]
	}
	return seq, event, seen&(1<<2) != 0
}

// fastBatch validates the events of a batch the codec did not decode, in place, and
// builds the raft payload from them. ok is false when any event needs the slow path
// (an unusual encoding, or an invalid event, whose error the slow path words); then
// *next is unchanged. A nil ingest with ok means every event was already sent.
func fastBatch(agentID string, raw [][]byte, next *uint64) (in *ingest, ok bool) {
	n := *next
	var payload []byte
	var last uint64
	for _, r := range raw {
		seq, ev, ok := outboxEvent(r)
		if !ok {
			return nil, false
		}
		// Also for an event already sent, which is dropped: the slow path decodes
		// it, and refuses the batch if it does not decode.
		if !canonical.WireValid(ev, agentID) {
			return nil, false
		}
		if seq < n {
			continue
		}
		if canonical.CheckSize(len(ev)) != nil {
			return nil, false
		}
		if payload == nil {
			size := len(agentID) + 8
			for _, r := range raw {
				size += len(r) + 8
			}
			payload = protowire.AppendTag(make([]byte, 0, size), 1, protowire.BytesType)
			payload = protowire.AppendString(payload, agentID)
		}
		payload = appendIngestEvent(payload, r)
		n, last = seq+1, seq
	}
	*next = n
	if payload == nil {
		return nil, true
	}
	return &ingest{payload: payload, last: last}, true
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
