package ledger

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/wire"
)

// LogChunk fields other than events (storev1.LogChunk): read from the wire by ScanRaw.
const (
	logChunkFirstSeq    protowire.Number = 1
	logChunkCommittedAt protowire.Number = 2
	logChunkAgent       protowire.Number = 3
	agentEventEvent     protowire.Number = 2 // storev1.AgentEvent.event
)

// RawEvent is one committed event as ScanRaw hands it out: the Event message's wire
// bytes exactly as the log stores them, valid only during the callback.
type RawEvent struct {
	Seq         uint64
	CommittedAt time.Time
	Event       []byte
	AgentSeq    uint64 // the sending agent's outbox seq
}

// ScanRaw calls fn for every committed event with seq >= from, in ascending seq order,
// in one read transaction, without decoding the events; with maxEvents > 0 it stops at
// the end of the chunk in which it reached maxEvents (so the next call starts at a
// chunk and reads no chunk twice): a reader that wants a few event types (the views) checks the
// type in the bytes and decodes only those. next is the seq to go on from: after the
// last event read when it stopped at maxEvents, else past LastSeq as of the call (the
// log holds nothing more up to it: events retention pruned from the tail leave no event
// to move a reader past them), and never below from. fn must copy what it keeps: the
// bytes belong to Badger.
func (l *Ledger) ScanRaw(from uint64, maxEvents int, fn func(ev RawEvent) error) (next uint64, err error) {
	return l.ScanRawTypes(nil, from, maxEvents, fn)
}

// ScanRawTypes is ScanRaw for a reader that folds only events of types: it refuses a
// from below their cutoff (the least of them, TypesLowWater) with a *PrunedError, since
// the reader would miss events of those types that a prune removed. The cutoff is read
// with the transaction the scan reads, so a prune that commits between them cannot make
// the scan skip events silently.
func (l *Ledger) ScanRawTypes(types []string, from uint64, maxEvents int, fn func(ev RawEvent) error) (next uint64, err error) {
	from = max(from, 1)
	next = from
	head := l.LastSeq() // read before the transaction: every event up to it is visible in it
	var cut uint64
	txn, done, err := l.readTxn(func(p *postings, _ *badger.Txn) error {
		cut = typesCut(p.low, types)
		return nil
	})
	if err != nil {
		return next, err
	}
	defer done()
	if from < cut {
		return next, prunedError(txn, from, cut, "")
	}
	stopped, err := scanRaw(txn, from, maxEvents, func(ev RawEvent) error {
		if err := fn(ev); err != nil {
			return err
		}
		next = ev.Seq + 1
		return nil
	})
	if err == nil && !stopped {
		next = max(next, head+1)
	}
	return next, err
}

// scanRaw is ScanRaw in txn; stopped says it stopped at maxEvents, before the end of
// the log.
func scanRaw(txn *logTxn, from uint64, maxEvents int, fn func(ev RawEvent) error) (stopped bool, err error) {
	start, err := rawChunkStart(txn, from)
	if err != nil {
		return false, err
	}
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixLog
	opts.PrefetchSize = 4
	it := txn.NewIterator(opts)
	defer it.Close()
	read := 0
	for it.Seek(logKey(start)); it.ValidForPrefix(prefixLog); it.Next() {
		item := it.Item()
		first := seqSuffix(item.Key())
		err := txn.chunkValue(item, func(v []byte) error {
			n, _, err := walkChunk(first, v, from, 0, false, fn)
			read += n
			return err
		})
		if err != nil {
			return false, err
		}
		if maxEvents > 0 && read >= maxEvents {
			return true, nil
		}
	}
	return false, nil
}

// rawChunkStart is chunkStart without decoding the chunk: the first seq of the chunk
// that holds seq, or seq when none does. A seq that starts a chunk (where ScanRaw's
// callers resume) costs one key read.
func rawChunkStart(txn *logTxn, seq uint64) (uint64, error) {
	start := seq
	_, err := withChunkAt(txn, seq, func(first uint64, item *badger.Item) error {
		if first == seq {
			return nil
		}
		// n is the chunk's span: its event count, or for a sparse chunk its last offset + 1.
		var n, span uint64
		err := txn.chunkValue(item, func(v []byte) error {
			for p := v; len(p) > 0; {
				num, typ, m := protowire.ConsumeTag(p)
				if m < 0 {
					return protowire.ParseError(m)
				}
				l := protowire.ConsumeFieldValue(num, typ, p[m:])
				if l < 0 {
					return protowire.ParseError(l)
				}
				switch {
				case num == wire.LogChunkEvents && typ == protowire.BytesType:
					n++
				case num == chunkOffsetsField && typ == protowire.BytesType:
					b, _ := protowire.ConsumeBytes(p[m:])
					for len(b) > 0 {
						x, k := protowire.ConsumeVarint(b)
						if k < 0 {
							return protowire.ParseError(k)
						}
						span = max(span, x+1)
						b = b[k:]
					}
				case num == chunkOffsetsField && typ == protowire.VarintType:
					x, _ := protowire.ConsumeVarint(p[m:])
					span = max(span, x+1)
				}
				p = p[m+l:]
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ledger: log chunk %d: %w", first, err)
		}
		if seq < first+max(n, span) {
			start = first
		}
		return nil
	})
	return start, err
}

// walkChunk hands the events of one chunk (stored under key first) with seq >= from to
// fn, at most limit of them when bounded. It reports how many it handed out and
// whether it stopped because of the limit.
func walkChunk(first uint64, v []byte, from uint64, limit int, bounded bool, fn func(RawEvent) error) (n int, stop bool, err error) {
	var (
		at       rawTime
		seqField uint64
		events   [chunkMaxEvents][]byte
		count    int
		offs     [chunkMaxEvents]uint32
		noffs    int
		sparse   bool
	)
	addOffset := func(x uint64) error {
		if noffs == len(offs) {
			return fmt.Errorf("ledger: log chunk %d has more than %d offsets", first, chunkMaxEvents)
		}
		offs[noffs] = uint32(x)
		noffs++
		return nil
	}
	for p := v; len(p) > 0; {
		num, typ, m := protowire.ConsumeTag(p)
		if m < 0 {
			return 0, false, fmt.Errorf("ledger: log chunk %d: %w", first, protowire.ParseError(m))
		}
		p = p[m:]
		switch {
		case num == logChunkFirstSeq && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: first seq: %w", first, protowire.ParseError(m))
			}
			seqField, p = x, p[m:]
		case num == logChunkCommittedAt && typ == protowire.BytesType:
			b, m := protowire.ConsumeBytes(p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: commit time: %w", first, protowire.ParseError(m))
			}
			if err := at.merge(b); err != nil {
				return 0, false, fmt.Errorf("ledger: log chunk %d: commit time: %w", first, err)
			}
			p = p[m:]
		case num == wire.LogChunkEvents && typ == protowire.BytesType:
			b, m := protowire.ConsumeBytes(p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: event %d: %w", first, count, protowire.ParseError(m))
			}
			if count == len(events) {
				return 0, false, fmt.Errorf("ledger: log chunk %d holds more than %d events", first, chunkMaxEvents)
			}
			events[count] = b
			count++
			p = p[m:]
		case num == chunkOffsetsField && typ == protowire.BytesType:
			b, m := protowire.ConsumeBytes(p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: offsets: %w", first, protowire.ParseError(m))
			}
			sparse = true
			for len(b) > 0 {
				x, k := protowire.ConsumeVarint(b)
				if k < 0 {
					return 0, false, fmt.Errorf("ledger: log chunk %d: offsets: %w", first, protowire.ParseError(k))
				}
				if err := addOffset(x); err != nil {
					return 0, false, err
				}
				b = b[k:]
			}
			p = p[m:]
		case num == chunkOffsetsField && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: offsets: %w", first, protowire.ParseError(m))
			}
			sparse = true
			if err := addOffset(x); err != nil {
				return 0, false, err
			}
			p = p[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, p)
			if m < 0 {
				return 0, false, fmt.Errorf("ledger: log chunk %d: %w", first, protowire.ParseError(m))
			}
			p = p[m:]
		}
	}
	if seqField != first {
		return 0, false, fmt.Errorf("ledger: log chunk under seq %d says it starts at %d", first, seqField)
	}
	if sparse {
		// A chunk a prune rewrote keeps its remaining events with their offsets from
		// first (prune.go); the same checks as every other reader of chunks.
		if err := checkOffsets(offs[:noffs], count); err != nil {
			return 0, false, fmt.Errorf("ledger: log chunk %d: %w", first, err)
		}
	}
	for i := range count {
		seq := first + uint64(i)
		if sparse {
			seq = first + uint64(offs[i])
		}
		if seq < from {
			continue
		}
		if bounded && n >= limit {
			return n, true, nil
		}
		ev, agentSeq, err := agentEventBytes(events[i])
		if err != nil {
			return n, false, fmt.Errorf("ledger: log chunk %d: event %d: %w", first, seq, err)
		}
		if err := fn(RawEvent{Seq: seq, CommittedAt: at.time(), Event: ev, AgentSeq: agentSeq}); err != nil {
			return n, false, err
		}
		n++
	}
	return n, false, nil
}

// agentEventBytes returns the Event field of an AgentEvent's wire form (nil when
// absent) and its agent seq (the last occurrence). Occurrences of a message field
// merge, which for the wire form is their concatenation; only a hand-made entry has
// more than one.
func agentEventBytes(b []byte) (ev []byte, agentSeq uint64, err error) {
	copied := false
	for len(b) > 0 {
		num, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return nil, 0, protowire.ParseError(m)
		}
		b = b[m:]
		switch {
		case num == agentEventEvent && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, 0, protowire.ParseError(m)
			}
			switch {
			case ev == nil:
				ev = v
			case !copied:
				ev, copied = append(append([]byte(nil), ev...), v...), true
			default:
				ev = append(ev, v...)
			}
			b = b[m:]
			continue
		case num == wire.AgentEventAgentSeq && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, 0, protowire.ParseError(m)
			}
			agentSeq, b = x, b[m:]
			continue
		}
		m = protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, 0, protowire.ParseError(m)
		}
		b = b[m:]
	}
	return ev, agentSeq, nil
}

// rawTime is a google.protobuf.Timestamp merged from its occurrences on the wire.
type rawTime struct{ sec, nsec int64 }

func (t *rawTime) merge(b []byte) error {
	for len(b) > 0 {
		num, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			x, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if num == 1 {
				t.sec = int64(x)
			} else {
				t.nsec = int64(int32(x))
			}
			b = b[m:]
			continue
		}
		m = protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}

func (t rawTime) time() time.Time { return time.Unix(t.sec, t.nsec).UTC() }
