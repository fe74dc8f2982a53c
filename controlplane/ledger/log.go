package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/wire"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// The event log is stored in chunks (see DESIGN.md, "Event log"): one record per run of
// up to chunkMaxEvents consecutive events of one INGEST_BATCH entry, keyed by the seq of
// its first event, holding the events' bytes exactly as they came in the Raft entry.
// The type index points at chunks, one entry per distinct type per chunk; the
// business-key index lists chunks too, in posting lists, and the id index maps ids to
// seqs in sorted runs, both written in bulk every few thousand events (postings.go,
// idruns.go). Writing a few records per batch instead of several per event is what
// makes Apply cheap (docs/performance.md).
const (
	// ledgerFormat is the layout version in m/format. Earlier builds' layouts are not
	// read by this build: 1 kept one record per event, 2 one key index record per key
	// per chunk, 3 one id index record per event, 4 id keys without the agent. Layout 5
	// is a valid layout 6 (which adds sparse chunks, lc/ and m/low, written only by
	// PRUNE_LEDGER), and layout 6 is a valid layout 7 (whose l/ values may also be
	// pointers into segment files, segments.go), so Open upgrades either in place
	// (ledgerFormatUpgradable).
	ledgerFormat = 7
	// chunkMaxEvents and chunkTargetBytes close a chunk: a chunk never holds more
	// events, and an event that would take it past chunkTargetBytes starts a new one. A
	// chunk's record is at most MaxEventBytes (one large event alone).
	chunkMaxEvents   = 256
	chunkTargetBytes = 256 << 10
)

var keyFormat = []byte("m/format") // u64BE layout version (ledgerFormat)

// chunkOffsetsField is LogChunk.offsets (field 5, packed varints).
const chunkOffsetsField protowire.Number = 5

// ledgerFormatUpgradable reports whether layout v is valid as ledgerFormat unchanged:
// Open and Restore accept it and record ledgerFormat. A layout 7 snapshot stream is a
// layout 6 stream (chunks, not pointers) under another number.
func ledgerFormatUpgradable(v uint64) bool { return v == 5 || v == 6 }

// chunkWriter builds the log chunks of one Apply. Budget is charged as the chunk grows;
// the record is written when the chunk closes.
type chunkWriter struct {
	tx          *applyTxn
	agent       string
	committedAt *timestamppb.Timestamp

	remaining int // bytes of the batch not added yet (a bound): sizes a new chunk's buffer

	first uint64 // seq of the chunk's first event; 0 when no chunk is open
	n     int
	buf   []byte
	types [][]byte // type index prefixes already written for this chunk

	// Reused by add, event after event.
	scratch []byte
	adds    []keyAdd
}

// keyAdd is a key index addition an event makes, with its cost.
type keyAdd struct {
	list          *addList
	entries, size int
}

// framedSize is what one event adds to a chunk record.
func framedSize(raw []byte) int {
	return protowire.SizeTag(wire.LogChunkEvents) + protowire.SizeBytes(len(raw))
}

// header encodes a chunk's fields other than its events.
func (w *chunkWriter) header(first uint64) ([]byte, error) {
	b, err := deterministic.Marshal(&storev1.LogChunk{FirstSeq: first, CommittedAt: w.committedAt, Agent: w.agent})
	if err != nil {
		return nil, fmt.Errorf("ledger: encode log chunk: %w", err)
	}
	return b, nil
}

// add commits event ie as seq; idk is its id key (nil: not indexed), charged here for
// the id run that will hold it (the caller records it). It returns false, writing
// nothing, when the event does not fit: the batch stops before it.
func (w *chunkWriter) add(seq uint64, ie *ingestEvent, idk []byte) (bool, error) {
	raw := ie.raw
	framed := framedSize(raw)
	if w.n > 0 && (w.n >= chunkMaxEvents || len(w.buf)+framed > chunkTargetBytes) {
		if err := w.close(); err != nil {
			return false, err
		}
	}
	first := w.first
	var hdr []byte
	if w.n == 0 {
		first = seq
		var err error
		if hdr, err = w.header(first); err != nil {
			return false, err
		}
		if len(hdr)+framed > MaxEventBytes {
			w.tx.logger.Error("ledger: event too large to commit; the batch stops before it and the agent will send it again",
				"agent", w.agent, "agent_seq", ie.agentSeq, "id", ie.id, "bytes", len(hdr)+framed, "max", MaxEventBytes)
			return false, nil
		}
	}

	// Count this event's writes: the id index, the type index entry and key index list
	// additions new to the chunk (charged as what a flush of them would write), and the
	// chunk record's growth (a new record when the chunk opens here).
	// Prefixes are built in a scratch buffer; each key's is looked up once in this
	// Apply's additions, which say whether the chunk already lists it.
	var newType []byte
	if typeIndexed(ie.typ) {
		w.scratch = appendTypeIndexPrefix(w.scratch[:0], ie.typ)
		if !w.hasType(w.scratch) {
			newType = bytes.Clone(w.scratch)
			w.tx.post.indexType(ie.typ)
		}
	}
	entries, size := 0, framed
	if newType != nil {
		entries++
		size += len(newType) + 8
	}
	adds := w.adds[:0]
	for _, e := range indexedKeys(ie.keys) {
		w.scratch = appendKeyIndexPrefix(w.scratch[:0], e.name, e.value)
		l := w.tx.post.entry(w.scratch)
		if l.last == first && w.n > 0 {
			continue // the open chunk lists it already
		}
		n, s := w.tx.post.cost(l, w.scratch, first)
		adds = append(adds, keyAdd{l, n, s})
		entries += n
		size += s
	}
	w.adds = adds
	if idk != nil {
		e, s := idCost(idk)
		entries += e
		size += s
	}
	if w.n == 0 {
		entries++
		size += len(prefixLog) + 8 + len(hdr)
	}
	if !w.tx.fits(entries, size) {
		return false, nil
	}
	w.tx.charge(entries, size)

	if w.n == 0 {
		w.first = first
		w.buf = append(make([]byte, 0, len(hdr)+min(max(w.remaining, framed), chunkTargetBytes+framed)), hdr...)
		w.types = w.types[:0]
	}
	if newType != nil {
		w.types = append(w.types, newType)
		if err := w.tx.put(cat(newType, u64(first)), nil); err != nil {
			return false, err
		}
	}
	for _, a := range adds {
		w.tx.post.add(a.list, first, a.entries, a.size)
	}
	w.remaining -= framed
	w.buf = protowire.AppendTag(w.buf, wire.LogChunkEvents, protowire.BytesType)
	w.buf = protowire.AppendBytes(w.buf, raw)
	w.n++
	return true, nil
}

// hasType reports whether the open chunk already has type index prefix p.
func (w *chunkWriter) hasType(p []byte) bool {
	if w.n == 0 {
		return false
	}
	for _, t := range w.types {
		if bytes.Equal(t, p) {
			return true
		}
	}
	return false
}

// close writes the open chunk, if any.
func (w *chunkWriter) close() error {
	if w.n == 0 {
		return nil
	}
	err := w.tx.putChunk(w.first, w.buf)
	w.first, w.n, w.buf = 0, 0, nil
	return err
}

// indexedKeys are the business keys that are indexed (and can be matched by a Filter):
// non-empty names, names and values up to maxKeyPart bytes, the first MaxIndexedKeys in
// name order. keys has one entry per name; it is sorted in place.
func indexedKeys(keys []kv) []kv {
	keys = slices.DeleteFunc(keys, func(e kv) bool {
		return e.name == "" || len(e.name) > maxKeyPart || len(e.value) > maxKeyPart
	})
	slices.SortFunc(keys, func(a, b kv) int { return strings.Compare(a.name, b.name) })
	if len(keys) > MaxIndexedKeys {
		keys = keys[:MaxIndexedKeys]
	}
	return keys
}

func typeIndexed(t string) bool { return t != "" && len(t) <= maxKeyPart }

// matches reports whether ev satisfies f on its indexed fields, the way the indexes
// would select it.
func (f Filter) matches(ev *eventv1.Event) bool {
	if f.Type != "" && (ev.GetType() != f.Type || !typeIndexed(f.Type)) {
		return false
	}
	if len(f.Keys) == 0 {
		return true
	}
	keys := make([]kv, 0, len(ev.GetKeys()))
	for name, value := range ev.GetKeys() {
		keys = append(keys, kv{name, value})
	}
	keys = indexedKeys(keys)
	for name, value := range f.Keys {
		i, ok := slices.BinarySearchFunc(keys, name, func(e kv, n string) int { return strings.Compare(e.name, n) })
		if !ok || keys[i].value != value {
			return false
		}
	}
	return true
}

// decodeChunk decodes a log record stored under key k.
func decodeChunk(k, v []byte) (*storev1.LogChunk, error) {
	c := &storev1.LogChunk{}
	if err := proto.Unmarshal(v, c); err != nil {
		return nil, fmt.Errorf("ledger: decode log chunk %d: %w", seqSuffix(k), err)
	}
	if c.GetFirstSeq() != seqSuffix(k) {
		return nil, fmt.Errorf("ledger: log chunk under seq %d says it starts at %d", seqSuffix(k), c.GetFirstSeq())
	}
	if err := checkOffsets(c.GetOffsets(), len(c.GetEvents())); err != nil {
		return nil, fmt.Errorf("ledger: log chunk %d: %w", c.GetFirstSeq(), err)
	}
	return c, nil
}

// checkOffsets checks a sparse chunk's offsets: none, or one per event, ascending.
func checkOffsets(off []uint32, events int) error {
	if len(off) == 0 {
		return nil
	}
	if len(off) != events {
		return fmt.Errorf("%d offsets for %d events", len(off), events)
	}
	for i := 1; i < len(off); i++ {
		if off[i] <= off[i-1] {
			return fmt.Errorf("offsets not ascending at %d", i)
		}
	}
	return nil
}

// chunkSeq is the seq of event i of c: first_seq + i, or first_seq + offsets[i] in a
// chunk retention thinned (sparse).
func chunkSeq(c *storev1.LogChunk, i int) uint64 {
	if off := c.GetOffsets(); len(off) > 0 {
		return c.GetFirstSeq() + uint64(off[i])
	}
	return c.GetFirstSeq() + uint64(i)
}

// chunkEnd is the seq after c's last event.
func chunkEnd(c *storev1.LogChunk) uint64 {
	n := len(c.GetEvents())
	if n == 0 {
		return c.GetFirstSeq()
	}
	return chunkSeq(c, n-1) + 1
}

func (t *logTxn) itemChunk(it *badger.Item) (*storev1.LogChunk, error) {
	var c *storev1.LogChunk
	err := t.chunkValue(it, func(v []byte) error {
		var err error
		c, err = decodeChunk(it.Key(), v)
		return err
	})
	return c, err
}

// committed returns event i of c as a CommittedEvent.
func committed(c *storev1.LogChunk, i int) *eventv1.CommittedEvent {
	ae := c.GetEvents()[i]
	ev := ae.GetEvent()
	if ev == nil {
		ev = &eventv1.Event{}
	}
	return &eventv1.CommittedEvent{
		Seq: chunkSeq(c, i), Event: ev, CommittedAt: c.GetCommittedAt(),
		Agent: c.GetAgent(), AgentSeq: ae.GetAgentSeq(),
	}
}

// chunkStart returns the first seq of the chunk that holds seq, or seq itself when no
// chunk does (seq is past the end of the log). It reads the chunk's wire form only as
// far as its length (rawChunkStart): the prune and ListEvents call it at every step.
func chunkStart(txn *logTxn, seq uint64) (uint64, error) { return rawChunkStart(txn, seq) }

// withChunkAt calls fn with the chunk that may hold seq: the one with the highest first
// seq at or below seq, as long as that first seq is within chunkMaxEvents of seq (a
// chunk holds at most chunkMaxEvents consecutive seqs, a sparse one a subset of them
// under the same key, so none further down can hold seq). found is false when there is
// none.
//
// The search reads only that range, forward, one 256-seq key block at a time (the
// iterator's prefix bounds it), and then reads the chunk it found by its key. Two
// earlier forms were slow once retention deletes chunks: an unbounded reverse seek
// walked over the tombstone of every chunk deleted below seq (each prune step scanned
// the whole pruned history), and a bounded reverse seek still made Badger copy every
// version of every key it passed, chunks included when they lived in the LSM tree (they
// are in segment files since, segments.go). BenchmarkPruneSteady and
// docs/performance.md (the soaks of 2026-12-05).
func withChunkAt(txn *logTxn, seq uint64, fn func(first uint64, item *badger.Item) error) (found bool, err error) {
	lo := seq - min(seq, chunkMaxEvents-1)
	var first uint64
	for block := seq >> 8; !found && block >= lo>>8; block-- {
		prefix := cat(prefixLog, u64(block << 8)[:7])
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Seek(logKey(max(lo, block<<8))); it.ValidForPrefix(prefix); it.Next() {
			s := seqSuffix(it.Item().Key())
			if s > seq {
				break
			}
			first, found = s, true
		}
		it.Close()
		if block == 0 {
			break
		}
	}
	if !found {
		return false, nil
	}
	item, err := txn.Get(logKey(first))
	if err != nil {
		return false, fmt.Errorf("ledger: read log chunk %d: %w", first, err)
	}
	return true, fn(first, item)
}

// readChunk returns the chunk stored at first; ok is false if there is none.
func readChunk(txn *logTxn, first uint64) (*storev1.LogChunk, bool, error) {
	it, err := txn.Get(logKey(first))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("ledger: read log chunk %d: %w", first, err)
	}
	c, err := txn.itemChunk(it)
	return c, err == nil, err
}

// eventAt returns the event with seq; ok is false if the log does not hold it. It
// decodes only that event of its chunk.
func eventAt(txn *logTxn, seq uint64) (*eventv1.CommittedEvent, bool, error) {
	var (
		c     *storev1.LogChunk
		ok    bool
		first uint64
	)
	_, err := withChunkAt(txn, seq, func(f uint64, item *badger.Item) error {
		first = f
		return txn.chunkValue(item, func(v []byte) error {
			var err error
			c, ok, err = chunkEvent(v, seq-first)
			return err
		})
	})
	if err != nil {
		return nil, false, fmt.Errorf("ledger: log chunk %d: %w", first, err)
	}
	if !ok {
		return nil, false, nil
	}
	if c.GetFirstSeq() != first {
		return nil, false, fmt.Errorf("ledger: log chunk under seq %d says it starts at %d", first, c.GetFirstSeq())
	}
	ev := committed(c, 0)
	ev.Seq = seq
	return ev, true, nil
}

// chunkEvent decodes an encoded LogChunk with only its event at offset i from its first
// seq (ok is false if it has no such event: past its end, or removed from a sparse
// chunk). The result has no offsets: its one event is at i.
func chunkEvent(v []byte, i uint64) (*storev1.LogChunk, bool, error) {
	var (
		b      []byte
		events [][]byte
		offs   []uint32
		sparse bool
	)
	for p := v; len(p) > 0; {
		num, typ, m := protowire.ConsumeTag(p)
		if m < 0 {
			return nil, false, protowire.ParseError(m)
		}
		l := protowire.ConsumeFieldValue(num, typ, p[m:])
		if l < 0 {
			return nil, false, protowire.ParseError(l)
		}
		field := p[:m+l]
		p = p[m+l:]
		switch {
		case num == wire.LogChunkEvents && typ == protowire.BytesType:
			events = append(events, field)
			continue
		case num == chunkOffsetsField && typ == protowire.BytesType:
			sparse = true
			for q := field[m:]; len(q) > 0; {
				pv, n := protowire.ConsumeBytes(q)
				if n < 0 {
					return nil, false, protowire.ParseError(n)
				}
				q = q[n:]
				for len(pv) > 0 {
					x, k := protowire.ConsumeVarint(pv)
					if k < 0 {
						return nil, false, protowire.ParseError(k)
					}
					offs = append(offs, uint32(x))
					pv = pv[k:]
				}
			}
			continue
		case num == chunkOffsetsField && typ == protowire.VarintType:
			sparse = true
			x, _ := protowire.ConsumeVarint(field[m:])
			offs = append(offs, uint32(x))
			continue
		}
		b = append(b, field...)
	}
	idx := i
	if sparse {
		if err := checkOffsets(offs, len(events)); err != nil {
			return nil, false, err
		}
		j, found := slices.BinarySearch(offs, uint32(min(i, 1<<32-1)))
		if !found || i > 1<<32-1 {
			return nil, false, nil
		}
		idx = uint64(j)
	}
	if idx >= uint64(len(events)) {
		return nil, false, nil
	}
	b = append(b, events[idx]...)
	c := &storev1.LogChunk{}
	if err := proto.Unmarshal(b, c); err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// chunkCommittedAt reads only the commit time of an encoded LogChunk.
func chunkCommittedAt(v []byte) (time.Time, error) {
	var ts timestamppb.Timestamp
	for p := v; len(p) > 0; {
		num, typ, m := protowire.ConsumeTag(p)
		if m < 0 {
			return time.Time{}, protowire.ParseError(m)
		}
		l := protowire.ConsumeFieldValue(num, typ, p[m:])
		if l < 0 {
			return time.Time{}, protowire.ParseError(l)
		}
		if num == 2 && typ == protowire.BytesType {
			b, _ := protowire.ConsumeBytes(p[m:])
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(b, &ts); err != nil {
				return time.Time{}, err
			}
		}
		p = p[m+l:]
	}
	return ts.AsTime(), nil
}
