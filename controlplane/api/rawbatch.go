package api

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/wire"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// UplinkCodec is the protobuf codec of the uplink handler (connect.WithCodec). It
// decodes like Connect's own, except a StreamRequest that is a plain batch (the batch
// field only, holding events only, which is what agents send): that one it does not
// decode. It keeps the batch's wire bytes, as the Batch's unknown fields, and leaves
// Events empty; validateBatch then checks each event in place (wire.EventValid) and
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
		if v, ok := wire.PlainBatch(data); ok {
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

// rawEvents returns the encoded events of a batch the codec did not decode, or nil.
func rawEvents(b *uplinkv1.Batch) [][]byte {
	if len(b.GetEvents()) > 0 {
		return nil
	}
	events, ok := wire.SplitBatch(b.ProtoReflect().GetUnknown(), true)
	if !ok || len(events) == 0 {
		return nil
	}
	return events
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
		seq, ev, ok := wire.OutboxEvent(r)
		if !ok {
			return nil, false
		}
		// Also for an event already sent, which is dropped: the slow path decodes
		// it, and refuses the batch if it does not decode.
		if !wire.EventValid(ev, agentID) {
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
			payload = wire.AppendIngestHeader(size, agentID)
		}
		payload = wire.AppendIngestEvent(payload, r)
		n, last = seq+1, seq
	}
	*next = n
	if payload == nil {
		return nil, true
	}
	return &ingest{payload: payload, last: last}, true
}

// ingest is a validated batch, ready for raft.
type ingest struct {
	payload []byte               // the encoded command, built from the events as sent; or
	cmd     *storev1.IngestBatch // the command to encode
	last    uint64               // the agent seq of its last event
}

// validateBatch checks a batch and turns it into a raft command. Seqs must be increasing;
// entries at or below what this stream already sent are dropped (a re-send after a
// reconnect). It returns nil when nothing is left. A batch the codec did not decode
// (UplinkCodec) is checked in place (fastBatch) and its payload built from the events'
// bytes as sent; if any event needs it, the batch is decoded and checked the slow way,
// which still builds the payload from the sent bytes unless an event carries fields
// this version does not know.
func validateBatch(agentID string, batch *uplinkv1.Batch, next *uint64) (*ingest, error) {
	raw := rawEvents(batch)
	if raw != nil {
		if len(raw) > ledger.MaxBatchEvents {
			return nil, fmt.Errorf("batch has %d events, more than %d", len(raw), ledger.MaxBatchEvents)
		}
		if in, ok := fastBatch(agentID, raw, next); ok {
			return in, nil
		}
		var full uplinkv1.Batch
		if err := proto.Unmarshal(batch.ProtoReflect().GetUnknown(), &full); err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
		batch = &full
	}
	if n := len(batch.GetEvents()); n > ledger.MaxBatchEvents {
		return nil, fmt.Errorf("batch has %d events, more than %d", n, ledger.MaxBatchEvents)
	}
	var payload []byte
	if raw != nil {
		size := len(agentID) + 8
		for _, r := range raw {
			size += len(r) + 8
		}
		payload = wire.AppendIngestHeader(size, agentID)
	}
	cmd := &storev1.IngestBatch{AgentId: agentID}
	for i, oe := range batch.GetEvents() {
		ev := oe.GetEvent()
		if oe.GetSeq() < *next {
			continue
		}
		if ev.GetId() == "" {
			return nil, fmt.Errorf("events[%d] (seq %d): id is required", i, oe.GetSeq())
		}
		// The size checked is the event's encoding as sent when the codec kept it (what
		// the agent checked and what the ledger stores), else as encoded here.
		err := canonical.ValidateFields(ev)
		if err == nil {
			if n, ok := wireEventLen(raw, i); ok {
				err = canonical.CheckSize(n)
			} else {
				err = canonical.CheckSize(proto.Size(ev))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("events[%d] (seq %d): %w", i, oe.GetSeq(), err)
		}
		if a := ev.GetSource().GetAgent(); a != agentID {
			return nil, fmt.Errorf("events[%d] (seq %d): source.agent %q is not this agent (%q)", i, oe.GetSeq(), a, agentID)
		}
		cmd.Events = append(cmd.Events, &storev1.AgentEvent{AgentSeq: oe.GetSeq(), Event: ev})
		switch {
		case raw == nil:
		case len(oe.ProtoReflect().GetUnknown()) > 0:
			// A newer agent's field would ride into the ledger: encode the batch here.
			raw, payload = nil, nil
		default:
			payload = wire.AppendIngestEvent(payload, raw[i])
		}
		*next = oe.GetSeq() + 1
	}
	if len(cmd.Events) == 0 {
		return nil, nil
	}
	in := &ingest{cmd: cmd, last: cmd.Events[len(cmd.Events)-1].GetAgentSeq()}
	if payload != nil {
		in.payload, in.cmd = payload, nil
	}
	return in, nil
}

// wireEventLen is the sent length of raw[i]'s event; ok is false when raw is nil (the
// batch was decoded) or the entry does not split.
func wireEventLen(raw [][]byte, i int) (int, bool) {
	if raw == nil {
		return 0, false
	}
	return wire.EventLen(raw[i])
}
