package ledger

import (
	"fmt"
	"maps"
	"slices"
)

// CompactedKeys calls fn, in seq order, for each event of types the log holds with seq
// at or after from, at most about maxEvents of them (whole chunks): its seq, type, and
// the key of its compacted record (lc/, as a prune step would write it; the bytes are
// valid only during the call). next is the seq to go on from: the first chunk not read
// when more is true, else LastSeq()+1 as of the call. It reads committed data only.
//
// The retention leader follows the log with it to know which (type, keys) of a compact
// type the log still holds a newer event of, and lists in PRUNE_LEDGER only the
// events whose keys it does not (compact_listed; controlplane/retention).
func (l *Ledger) CompactedKeys(types []string, from uint64, maxEvents int, fn func(seq uint64, typ string, key []byte)) (next uint64, more bool, err error) {
	from = max(from, 1)
	head := l.LastSeq() // read before the transaction: every chunk up to it is visible
	if head < from || len(types) == 0 {
		return max(from, head+1), false, nil
	}
	want := map[string]bool{}
	for _, t := range types {
		if !typeIndexed(t) {
			return 0, false, fmt.Errorf("ledger: compacted keys: type %q is not indexed (empty or over %d bytes)", t, maxKeyPart)
		}
		want[t] = true
	}
	maxEvents = max(maxEvents, 1)
	next = head + 1
	err = l.viewLog(func(txn *logTxn) error {
		cand := map[uint64]bool{}
		var limit uint64 // the first chunk a listing stopped at (0: none did)
		for _, t := range types {
			lim, err := typeChunks(txn, t, from, head+1, uint64(maxEvents), func(first uint64) { cand[first] = true })
			if err != nil {
				return err
			}
			limit = firstLimit(limit, lim)
		}
		ps := &parseState{arena: strArena{size: 4096}}
		var key []byte
		n := 0
		for _, first := range slices.Sorted(maps.Keys(cand)) {
			if limit != 0 && first >= limit {
				next, more = limit, true
				return nil
			}
			if n >= maxEvents {
				next, more = first, true
				return nil
			}
			v, _, _, ok, err := txn.getChunk(first)
			if err != nil {
				return fmt.Errorf("ledger: compacted keys: read log chunk %d: %w", first, err)
			}
			if !ok {
				continue // pruned since the index was read
			}
			pc, err := pruneEvents(first, v)
			if err != nil {
				return err
			}
			for _, e := range pc.evs {
				if e.seq < from || e.seq > head || !want[e.typ] {
					continue
				}
				var ie ingestEvent
				ps.keys = ps.keys[:0]
				if err := ie.parseEvent(ps, 0, e.ev); err != nil {
					return fmt.Errorf("ledger: compacted keys: log chunk %d: event %d: %w", first, e.seq, err)
				}
				key = appendCompactedKey(key, e.typ, ps.keys)
				fn(e.seq, e.typ, key)
				n++
			}
		}
		if limit != 0 {
			next, more = limit, true
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return next, more, nil
}
