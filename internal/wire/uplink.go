package wire

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// BatchWriter writes the uplink StreamRequest carrying a batch of outbox entries
// without decoding the events, into a buffer it reuses batch after batch: the request
// is its wire bytes, which are exactly what StreamRequest{Batch{Events:
// [OutboxEvent{Seq, Event}]}} marshals to, so the control plane reads a normal batch.
// Decoding and re-encoding every event was a sixth of an agent's CPU under load, and
// one OutboxEvent per event still a visible share. Each entry's bytes are checked to be
// well-formed protobuf fields.
type BatchWriter struct {
	buf []byte
}

// batchHeaderRoom is kept at the front of the buffer for the request's only field tag
// (StreamRequest.batch) and the batch's length, written last, right-aligned.
const batchHeaderRoom = 1 + binary.MaxVarintLen64

// Reset starts a new batch.
func (w *BatchWriter) Reset() {
	w.buf = append(w.buf[:0], make([]byte, batchHeaderRoom)...)
}

// Add appends the entry (rec is copied).
func (w *BatchWriter) Add(seq uint64, rec []byte) error {
	for p := rec; len(p) > 0; {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return fmt.Errorf("wire: outbox entry %d is not an event: %w", seq, protowire.ParseError(n))
		}
		p = p[n:]
		if n = protowire.ConsumeFieldValue(num, typ, p); n < 0 {
			return fmt.Errorf("wire: outbox entry %d is not an event: %w", seq, protowire.ParseError(n))
		}
		p = p[n:]
	}
	w.buf = protowire.AppendTag(w.buf, BatchEvents, protowire.BytesType)
	w.buf = protowire.AppendVarint(w.buf, uint64(outboxEventSize(seq, len(rec))))
	w.buf = protowire.AppendTag(w.buf, OutboxEventSeq, protowire.VarintType)
	w.buf = protowire.AppendVarint(w.buf, seq)
	w.buf = protowire.AppendTag(w.buf, OutboxEventEvent, protowire.BytesType)
	w.buf = protowire.AppendBytes(w.buf, rec)
	return nil
}

// Request returns the encoded StreamRequest of the entries added since Reset. It holds
// the buffer: it must be used (sent, which copies it) before the next Reset.
func (w *BatchWriter) Request() []byte {
	size := len(w.buf) - batchHeaderRoom
	hdr := protowire.AppendVarint(protowire.AppendTag(nil, StreamRequestBatch, protowire.BytesType), uint64(size))
	start := batchHeaderRoom - len(hdr)
	copy(w.buf[start:], hdr)
	return w.buf[start:]
}

// outboxEventSize is the encoded size of OutboxEvent{Seq: seq, Event: n bytes}.
func outboxEventSize(seq uint64, n int) int {
	return protowire.SizeTag(OutboxEventSeq) + protowire.SizeVarint(seq) + protowire.SizeTag(OutboxEventEvent) + protowire.SizeBytes(n)
}

// PlainBatch returns the encoded Batch when data is a StreamRequest holding only a
// batch, once, and the batch holds only events.
func PlainBatch(data []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 || num != StreamRequestBatch || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(data[n:])
	if m < 0 || n+m != len(data) {
		return nil, false
	}
	if _, ok := SplitBatch(v, false); !ok {
		return nil, false
	}
	return v, true
}

// SplitBatch splits an encoded Batch into its encoded events (or, with keep false, only
// checks that it can be split); ok is false if it holds anything else.
func SplitBatch(v []byte, keep bool) (events [][]byte, ok bool) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 || num != BatchEvents || typ != protowire.BytesType {
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

// OutboxEvent reads an encoded uplink OutboxEvent written the usual way: seq and event
// at most once each, nothing else.
func OutboxEvent(raw []byte) (seq uint64, event []byte, ok bool) {
	var seen uint8
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 || num < OutboxEventSeq || num > OutboxEventEvent || seen&(1<<num) != 0 {
			return 0, nil, false
		}
		seen |= 1 << num
		raw = raw[n:]
		switch {
		case num == OutboxEventSeq && typ == protowire.VarintType:
			seq, n = protowire.ConsumeVarint(raw)
		case num == OutboxEventEvent && typ == protowire.BytesType:
			event, n = protowire.ConsumeBytes(raw)
		default:
			return 0, nil, false
		}
		if n < 0 {
			return 0, nil, false
		}
		raw = raw[n:]
	}
	return seq, event, seen&(1<<OutboxEventEvent) != 0
}

// EventLen returns the encoded length of the event in raw, an encoded uplink
// OutboxEvent (the sum over its event fields, which proto merges).
func EventLen(raw []byte) (n int, ok bool) {
	for v := raw; len(v) > 0; {
		num, typ, m := protowire.ConsumeTag(v)
		if m < 0 {
			return 0, false
		}
		l := protowire.ConsumeFieldValue(num, typ, v[m:])
		if l < 0 {
			return 0, false
		}
		if num == OutboxEventEvent && typ == protowire.BytesType {
			b, _ := protowire.ConsumeBytes(v[m:])
			n += len(b)
		}
		v = v[m+l:]
	}
	return n, true
}

// AppendIngestHeader starts a store IngestBatch payload for agentID, with room for
// size more bytes.
func AppendIngestHeader(size int, agentID string) []byte {
	b := protowire.AppendTag(make([]byte, 0, size), IngestBatchAgentID, protowire.BytesType)
	return protowire.AppendString(b, agentID)
}

// AppendIngestEvent appends one events entry of a store IngestBatch holding raw, an
// encoded uplink OutboxEvent (the same bytes as an AgentEvent).
func AppendIngestEvent(payload, raw []byte) []byte {
	payload = protowire.AppendTag(payload, IngestBatchEvents, protowire.BytesType)
	return protowire.AppendBytes(payload, raw)
}

// AppendIngestIncarnation appends IngestBatch.incarnation (a field's place on the wire
// is free, so it may follow the events).
func AppendIngestIncarnation(payload []byte, incarnation uint64) []byte {
	payload = protowire.AppendTag(payload, IngestBatchIncarnation, protowire.VarintType)
	return protowire.AppendVarint(payload, incarnation)
}
