package ledger

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
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
func parseIngestBatch(p []byte) (agent string, events []ingestEvent, err error) {
	err = scanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				return fmt.Errorf("agent_id: %w", errInvalidUTF8)
			}
			agent = string(v)
		case num == 2 && typ == protowire.BytesType:
			ie := ingestEvent{raw: v}
			if err := ie.parseAgentEvent(v); err != nil {
				return fmt.Errorf("events[%d]: %w", len(events), err)
			}
			events = append(events, ie)
		}
		return nil
	})
	return agent, events, err
}

func (ie *ingestEvent) parseAgentEvent(p []byte) error {
	return scanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			ie.agentSeq = x
		case num == 2 && typ == protowire.BytesType:
			return ie.parseEvent(v) // a repeated occurrence merges into the same event
		}
		return nil
	})
}

func (ie *ingestEvent) parseEvent(p []byte) error {
	return scanFields(p, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1, 2:
			if !utf8.Valid(v) {
				return fmt.Errorf("event field %d: %w", num, errInvalidUTF8)
			}
			if num == 1 {
				ie.id = string(v)
			} else {
				ie.typ = string(v)
			}
		case 3:
			var e kv
			err := scanFields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if typ != protowire.BytesType || (num != 1 && num != 2) {
					return nil
				}
				if !utf8.Valid(v) {
					return fmt.Errorf("keys entry: %w", errInvalidUTF8)
				}
				if num == 1 {
					e.name = string(v)
				} else {
					e.value = string(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(ie.keys, func(o kv) bool { return o.name == e.name }); i >= 0 {
				ie.keys[i] = e
			} else {
				ie.keys = append(ie.keys, e)
			}
		}
		return nil
	})
}

// scanFields calls fn for each field of an encoded message: v is the value of a
// length-delimited field, x of a varint one.
func scanFields(p []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return protowire.ParseError(n)
		}
		p = p[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(p)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(p)
		default:
			n = protowire.ConsumeFieldValue(num, typ, p)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		p = p[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
