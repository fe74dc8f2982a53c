package ledger

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/wire"
)

// ingestEvent is what Apply needs of one AgentEvent of an IngestBatch, read from its wire
// form: the bytes it stores, the outbox seq, and the fields it deduplicates and indexes
// by. The rest of the event (the payload) is not decoded on the apply path.
type ingestEvent struct {
	raw      []byte
	agentSeq uint64
	id, typ  string
	keys     []kv // last value per name, in wire order
}

type kv struct{ name, value string }

var errInvalidUTF8 = errors.New("string field is not valid UTF-8")

// parseIngestBatch reads an encoded IngestBatch the way proto.Unmarshal would (the last
// of repeated scalar fields wins, occurrences of a message field merge, map entries
// replace earlier ones with the same key, unknown fields are skipped, strings must be
// UTF-8) but keeps only what Apply needs. FuzzParseIngestBatch holds it to
// proto.Unmarshal.
//
// The strings it returns (ids, types, key names and values) are copied into a few
// shared buffers (strArena) and the key lists share one slice, rather than one
// allocation each: nine or so per event on every replica were a visible share of the
// apply path's CPU and garbage.
func parseIngestBatch(p []byte) (hdr batchHeader, events []ingestEvent, err error) {
	st := &parseState{arena: strArena{size: len(p)/4 + 64}}
	err = wire.ScanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == wire.IngestBatchAgentID && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				return fmt.Errorf("agent_id: %w", errInvalidUTF8)
			}
			hdr.agent = string(v)
		case num == wire.IngestBatchIncarnation && typ == protowire.VarintType:
			hdr.incarnation = x
		case num == wire.IngestBatchEvents && typ == protowire.BytesType:
			ie := ingestEvent{raw: v}
			if err := ie.parseAgentEvent(st, v); err != nil {
				return fmt.Errorf("events[%d]: %w", len(events), err)
			}
			events = append(events, ie)
		}
		return nil
	})
	return hdr, events, err
}

// batchHeader is an IngestBatch's fields other than its events.
type batchHeader struct {
	agent       string
	incarnation uint64
}

// parseState is what the events of one batch share while parsed.
type parseState struct {
	arena strArena
	keys  []kv // every event's keys, each event's a slice of it
}

// strArena makes strings by copying bytes into shared buffers it never changes once
// written, so each string stays valid (and keeps its buffer alive) as long as it is
// referenced.
type strArena struct {
	buf  []byte
	size int // of the next buffer
}

func (a *strArena) str(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if cap(a.buf)-len(a.buf) < len(v) {
		a.buf = make([]byte, 0, max(a.size, len(v)))
		a.size = max(a.size, 4096)
	}
	start := len(a.buf)
	a.buf = append(a.buf, v...)
	return unsafe.String(&a.buf[start], len(v))
}

func (ie *ingestEvent) parseAgentEvent(st *parseState, p []byte) error {
	start := len(st.keys)
	err := wire.ScanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == wire.AgentEventAgentSeq && typ == protowire.VarintType:
			ie.agentSeq = x
		case num == wire.AgentEventEvent && typ == protowire.BytesType:
			return ie.parseEvent(st, start, v) // a repeated occurrence merges into the same event
		}
		return nil
	})
	// The event's keys are the end of st.keys; capped, so an append copies them.
	ie.keys = st.keys[start:len(st.keys):len(st.keys)]
	if len(ie.keys) == 0 {
		ie.keys = nil
	}
	return err
}

// parseEvent reads an Event into ie; its keys go to st.keys after start.
func (ie *ingestEvent) parseEvent(st *parseState, start int, p []byte) error {
	return wire.ScanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case wire.EventID, wire.EventType:
			if !utf8.Valid(v) {
				return fmt.Errorf("event field %d: %w", num, errInvalidUTF8)
			}
			if num == wire.EventID {
				ie.id = st.arena.str(v)
			} else {
				ie.typ = st.arena.str(v)
			}
		case wire.EventKeys:
			var e kv
			err := wire.ScanFields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if typ != protowire.BytesType || (num != wire.MapEntryKey && num != wire.MapEntryValue) {
					return nil
				}
				if !utf8.Valid(v) {
					return fmt.Errorf("keys entry: %w", errInvalidUTF8)
				}
				if num == wire.MapEntryKey {
					e.name = st.arena.str(v)
				} else {
					e.value = st.arena.str(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(st.keys[start:], func(o kv) bool { return o.name == e.name }); i >= 0 {
				st.keys[start+i] = e
			} else {
				st.keys = append(st.keys, e)
			}
		}
		return nil
	})
}
