package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
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

// Retention (DESIGN.md "Retention"): PRUNE_LEDGER removes events below cutoffs the
// leader computed from committed data, so every replica removes the same events. A chunk
// whose events all go is deleted with its type index entries; a chunk where some go is
// rewritten sparse (LogChunk.offsets); the newest pruned event per (type, keys) of a
// compact type is kept under lc/; id runs below the dedup cutoff are deleted; m/low
// records what is gone, for reads below it (ErrPruned).

var (
	keyLowWater      = []byte("m/low")    // LowWater
	keyKeySweep      = []byte("m/ksweep") // the next k/ record the prune's key index sweep looks at
	sweepMaxKeys     = 50_000             // k/ records one prune's sweep looks at (a variable for tests)
	sweepStepKeys    = 2_000              // of those, k/ records one step looks at (a variable for tests)
	prefixCompacted  = []byte("lc/")      // + u16BE(len) type + keys -> CommittedEvent
	errPruneRefused  = errors.New("ledger: prune refused")
	pruneMaxEvents   = 10_000  // events one PRUNE_LEDGER removes at most (a variable for tests)
	pruneMaxArchived = 4 << 20 // bytes of events one PRUNE_LEDGER hands the Archiver at most
)

// Archiver stores events about to be pruned. The ledger calls it on every node inside
// Apply of PRUNE_LEDGER before anything is deleted; an error stops the node (it cannot
// follow the log without diverging), so it must only fail when storage does. It must be
// idempotent (a replayed entry archives the same events again) and deterministic in
// what it writes.
type Archiver interface {
	Archive(ctx context.Context, events []*eventv1.CommittedEvent) error
}

// ErrPruned is returned (wrapped in a *PrunedError) by reads below the retention
// low-water mark: the events asked for were removed by retention.
var ErrPruned = errors.New("ledger: events pruned by retention")

// PrunedError says what was asked and what the ledger still holds.
type PrunedError struct {
	Asked uint64 // the seq asked for (0 when asked by id or time)
	Type  string // the event type the cutoff is for; "" for the whole log
	ID    string // the event id asked for, when asked by id
	// Seq and At are the earliest event still held at or after the cutoff (At is zero
	// when the ledger holds no event there yet).
	Seq uint64
	At  time.Time
}

func (e *PrunedError) Error() string {
	var b strings.Builder
	b.WriteString("ledger: ")
	switch {
	case e.ID != "":
		fmt.Fprintf(&b, "event %q was pruned by retention", e.ID)
	case e.Type != "":
		fmt.Fprintf(&b, "events of type %s before seq %d were pruned by retention (asked from seq %d)", e.Type, e.Seq, e.Asked)
	default:
		fmt.Fprintf(&b, "events before seq %d were pruned by retention (asked from seq %d)", e.Seq, e.Asked)
	}
	if e.At.IsZero() {
		fmt.Fprintf(&b, "; the earliest seq still held is %d (no event committed there yet)", e.Seq)
	} else {
		fmt.Fprintf(&b, "; the earliest still held is seq %d, committed at %s", e.Seq, e.At.UTC().Format(time.RFC3339Nano))
	}
	b.WriteString("; ask from there, or replay older events from the archive")
	return b.String()
}

// Is makes errors.Is(err, ErrPruned) true.
func (e *PrunedError) Is(target error) bool { return target == ErrPruned }

// typeCut is the cutoff of type typ in lw: events of it below are gone.
func typeCut(lw *storev1.LowWater, typ string) uint64 {
	if i, ok := slices.BinarySearchFunc(lw.GetTypes(), typ, func(c *storev1.PruneCutoff, t string) int { return strings.Compare(c.GetType(), t) }); ok {
		return lw.GetTypes()[i].GetBelow()
	}
	return lw.GetDefaultBelow()
}

// LowWater is the earliest seq still held for the whole log (events below it are gone;
// some above it may be, of types kept shorter) and the commit time of the earliest
// event held at or after it. 0 and the zero time when nothing was pruned.
func (l *Ledger) LowWater() (uint64, time.Time) {
	lw, err := l.Retention()
	if err != nil || lw.GetSeq() <= 1 {
		return 0, time.Time{} // nothing below seq 1
	}
	var at time.Time
	if lw.GetAt() != nil {
		at = lw.GetAt().AsTime()
	}
	return lw.GetSeq(), at
}

// Retention returns what retention removed (m/low); nil when nothing was pruned.
func (l *Ledger) Retention() (*storev1.LowWater, error) {
	h, err := l.acquire()
	if err != nil {
		return nil, err
	}
	defer l.release(h)
	h.post.mu.RLock()
	defer h.post.mu.RUnlock()
	return h.post.low, nil
}

// prunedError builds the error for a read from seq asked below cutoff (of typ).
func prunedError(txn *logTxn, asked, cutoff uint64, typ string) error {
	e := &PrunedError{Asked: asked, Type: typ, Seq: cutoff}
	if ev, ok, err := firstHeld(txn, cutoff); err == nil && ok {
		e.Seq, e.At = ev.seq, ev.at
	}
	return e
}

type heldEvent struct {
	seq uint64
	at  time.Time
}

// firstHeld finds the first event held at or after seq and its commit time, from the
// chunks' wire form.
func firstHeld(txn *logTxn, seq uint64) (heldEvent, bool, error) {
	var (
		out   heldEvent
		found bool
	)
	_, err := scanRaw(txn, seq, 1, func(ev RawEvent) error {
		out, found = heldEvent{ev.Seq, ev.CommittedAt}, true
		return errStopWalk
	})
	if errors.Is(err, errStopWalk) {
		err = nil
	}
	return out, found, err
}

// compactedKey is the lc/ key of an event of typ with keys: the type, then the keys
// sorted by name (u16BE length, name, u32BE length, value); hashed when longer than
// a Badger key may be.
func compactedKey(typ string, keys map[string]string) []byte {
	kvs := make([]kv, 0, len(keys))
	for name, value := range keys {
		kvs = append(kvs, kv{name, value})
	}
	return compactedKeyKV(typ, kvs)
}

// compactedKeyKV is compactedKey with the keys as a list of distinct names (sorted here,
// in place).
func compactedKeyKV(typ string, keys []kv) []byte { return appendCompactedKey(nil, typ, keys) }

// appendCompactedKey appends compactedKeyKV(typ, keys) to dst[:0] and returns it.
func appendCompactedKey(dst []byte, typ string, keys []kv) []byte {
	slices.SortFunc(keys, func(a, b kv) int { return strings.Compare(a.name, b.name) })
	b := append(dst[:0], prefixCompacted...)
	b = binary.BigEndian.AppendUint16(b, uint16(min(len(typ), 0xffff)))
	b = append(b, typ...)
	for _, k := range keys {
		b = binary.BigEndian.AppendUint16(b, uint16(min(len(k.name), 0xffff)))
		b = append(b, k.name...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(k.value)))
		b = append(b, k.value...)
	}
	if len(b) > 4*maxKeyPart || len(typ) > maxKeyPart {
		sum := sha256.Sum256(b)
		return cat(prefixCompacted, []byte{0xff, 0xff}, sum[:])
	}
	return b
}

// ScanCompacted calls fn, for each of types (a compact type of the Retention document),
// with the compacted event of each (type, keys) it holds: the base a view starts from
// after a prune, before reading the log from the types' low-water. For a key the log
// holds no event of any more it is the newest pruned; for a key the log still holds
// newer events of, it may be an older one or none (a listed prune writes no record
// while a newer event is held; see DESIGN.md "Compaction"), which the log's events
// replace. Within a type the order is by keys.
func (l *Ledger) ScanCompacted(types []string, fn func(ev *eventv1.CommittedEvent) error) error {
	return l.view(func(txn *badger.Txn) error {
		for _, typ := range types {
			if len(typ) > maxKeyPart {
				continue
			}
			prefix := binary.BigEndian.AppendUint16(append([]byte(nil), prefixCompacted...), uint16(len(typ)))
			prefix = append(prefix, typ...)
			opts := badger.DefaultIteratorOptions
			opts.Prefix = prefix
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				ev := &eventv1.CommittedEvent{}
				if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, ev) }); err != nil {
					it.Close()
					return fmt.Errorf("ledger: decode compacted event %q: %w", it.Item().Key(), err)
				}
				if ev.GetEvent().GetType() != typ {
					continue // a type whose prefix this one is: "a" vs "ab" differ in length, so this is defensive
				}
				if err := fn(ev); err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
}

// pruneCuts are the effective cutoffs of one PRUNE_LEDGER: per listed type and the
// default, never below what earlier prunes did (prev) and never past the flushed part
// of the log (the pending key lists and ids describe the chunks after m/kflush, which
// a restarted node rebuilds from the chunks: those are never touched).
type pruneCuts struct {
	types   map[string]uint64
	def     uint64
	prev    *storev1.LowWater
	ceil    uint64 // m/kflush + 1
	compact map[string]bool
}

// cut is the cutoff of events of type typ.
func (c *pruneCuts) cut(typ string) uint64 {
	v, ok := c.types[typ]
	if !ok {
		v = c.def
	}
	return max(min(v, c.ceil), typeCut(c.prev, typ))
}

// cutDefault is the cutoff of the types not listed.
func (c *pruneCuts) cutDefault() uint64 {
	return max(min(c.def, c.ceil), c.prev.GetDefaultBelow())
}

// pruneAction is what happens to one chunk.
type pruneAction struct {
	first   uint64
	rewrite []byte   // the sparse chunk; nil deletes the chunk
	untype  [][]byte // type index keys to delete
	old     segPtr   // where the chunk was, when in a segment (inSeg)
	inSeg   bool
}

// applyPruneLedger removes the events below the command's cutoffs, at most
// pruneMaxEvents (or max_events) of them and what fits the apply budget, in seq order;
// the result says whether more remain. See DESIGN.md "Retention".
func applyPruneLedger(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.PruneLedger
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	for i, c := range m.GetTypes() {
		if c.GetType() == "" || len(c.GetType()) > maxKeyPart || (i > 0 && m.GetTypes()[i-1].GetType() >= c.GetType()) {
			return &storev1.PruneResult{Error: fmt.Sprintf("%s: types must be non-empty, at most %d bytes, sorted and unique", errPruneRefused, maxKeyPart)}, nil
		}
	}
	p := tx.post.pend
	prev := p.low
	if prev == nil {
		prev = &storev1.LowWater{}
	}
	cuts := &pruneCuts{types: map[string]uint64{}, def: m.GetDefaultBelow(), prev: prev, ceil: p.flushed + 1, compact: map[string]bool{}}
	for _, c := range m.GetTypes() {
		cuts.types[c.GetType()] = c.GetBelow()
	}
	for _, t := range m.GetCompact() {
		cuts.compact[t] = true
	}
	compactListed, seqs := m.GetCompactListed(), m.GetCompactSeqs()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			return &storev1.PruneResult{Error: fmt.Sprintf("%s: compact_seqs must be ascending and unique", errPruneRefused)}, nil
		}
	}
	// compacts reports whether the event at seq of typ is written to lc/: every pruned
	// event of a compact type, unless the command lists which (compact_listed).
	compacts := func(typ string, seq uint64) bool {
		if !cuts.compact[typ] {
			return false
		}
		if !compactListed {
			return true
		}
		_, ok := slices.BinarySearch(seqs, seq)
		return ok
	}
	maxEvents := pruneMaxEvents
	if n := int(m.GetMaxEvents()); n > 0 {
		maxEvents = min(n, maxEvents)
	}

	// Candidate chunks: those the type index lists for each type between its earlier
	// and its new cutoff, and every chunk between the earlier and the new global
	// low-water (events whose type is not indexed).
	//
	// Each listing goes only as far as this step can take (span seqs from where it
	// starts): listing them all, at every step of a prune in steps, read the whole
	// backlog's index again each time, so a retention far behind (turned on over a large
	// ledger, or after ingest outran it) spent most of each step listing.
	// limit is the first chunk some listing stopped at (0: all were listed); no chunk at
	// or past it is processed in this step, so every chunk processed was listed by all.
	cand := map[uint64]bool{}
	var limit uint64
	span := uint64(maxEvents) * logChunksSpan
	// The types the index may list (a superset: a type without entries lists no chunk).
	typesSeen := slices.Sorted(maps.Keys(tx.post.pend.types))
	newGlobal := cuts.cutDefault()
	for _, t := range typesSeen {
		lo, hi := typeCut(prev, t), cuts.cut(t)
		newGlobal = min(newGlobal, hi)
		if hi <= lo {
			continue
		}
		l, err := typeChunks(tx.txn, t, lo, hi, span, func(first uint64) { cand[first] = true })
		if err != nil {
			return nil, err
		}
		limit = firstLimit(limit, l)
	}
	for t := range cuts.types {
		newGlobal = min(newGlobal, cuts.cut(t))
	}
	for _, c := range prev.GetTypes() {
		newGlobal = min(newGlobal, cuts.cut(c.GetType()))
	}
	// The chunks below the new global low-water, as far as this step can take.
	if newGlobal > prev.GetSeq() {
		l, err := logChunks(tx.txn, prev.GetSeq(), newGlobal, span, func(first uint64) { cand[first] = true })
		if err != nil {
			return nil, err
		}
		limit = firstLimit(limit, l)
	}

	res := &storev1.PruneResult{}
	var (
		actions  []pruneAction
		pruned   int                       // events removed
		archived []*eventv1.CommittedEvent // those of them the archive does not hold yet
		arcBytes int
		compact  = map[string][]byte{}                      // compacted key -> the newest event of the step, encoded
		ps       = &parseState{arena: strArena{size: 4096}} // for the keys of compacted events
		resume   uint64                                     // first chunk not processed; 0 when all were
		marks    = archiveMarks(tx.archiver)
	)
	for _, first := range slices.Sorted(maps.Keys(cand)) {
		if limit != 0 && first >= limit {
			resume = limit
			break
		}
		v, old, inSeg, ok, err := tx.txn.getChunk(first)
		if err != nil {
			return nil, fmt.Errorf("ledger: prune: read log chunk %d: %w", first, err)
		}
		if !ok {
			continue
		}
		// What goes, the budget, the index keys and the compacted events come from the
		// chunk's wire form (the same on every node); the chunk is decoded only for the
		// events this node's archive does not hold yet (ArchiveAhead usually archived
		// them), which differs between nodes: nothing replicated depends on it.
		pc, err := pruneEvents(first, v)
		if err != nil {
			return nil, err
		}
		evs := pc.evs
		var gone, keep []int
		decode := false
		for i, e := range evs {
			if e.seq < cuts.cut(e.typ) {
				gone = append(gone, i)
				decode = decode || marks.missing(e.typ, e.seq)
			} else {
				keep = append(keep, i)
			}
		}
		if len(gone) == 0 {
			continue
		}
		var c *storev1.LogChunk
		if decode {
			if c, err = decodeChunk(logKey(first), v); err != nil {
				return nil, err
			}
			if len(c.GetEvents()) != len(evs) {
				return nil, fmt.Errorf("ledger: prune: log chunk %d decodes to %d events, its wire form has %d", first, len(c.GetEvents()), len(evs))
			}
		}
		// Cost: the chunk's delete or rewrite, type index deletes, compacted writes.
		a := pruneAction{first: first, old: old, inSeg: inSeg}
		entries, size := 1, len(prefixLog)+8
		if len(keep) > 0 {
			if a.rewrite, err = sparseChunk(v, first, evs, keep); err != nil {
				return nil, fmt.Errorf("ledger: prune: rewrite log chunk %d: %w", first, err)
			}
			size += len(a.rewrite)
		}
		kept := map[string]bool{}
		for _, i := range keep {
			kept[evs[i].typ] = true
		}
		all := map[string]bool{}
		for _, e := range evs {
			all[e.typ] = true
		}
		for _, t := range slices.Sorted(maps.Keys(all)) {
			if !kept[t] && typeIndexed(t) {
				k := cat(typeIndexPrefix(t), u64(first))
				a.untype = append(a.untype, k)
				entries++
				size += len(k)
			}
		}
		var toArchive []*eventv1.CommittedEvent
		evBytes := 0
		newCompact := map[string][]byte{}
		agent, agentRead := "", false
		for _, i := range gone {
			e := evs[i]
			evBytes += len(e.ev) + 64
			if c != nil && marks.missing(e.typ, e.seq) {
				toArchive = append(toArchive, committed(c, i))
			}
			if compacts(e.typ, e.seq) {
				// The event's keys as proto.Unmarshal reads them (parseEvent, the
				// reader of the apply path), and the event as a CommittedEvent around
				// its stored bytes. Charged whether or not a later event of its keys in
				// this step replaces it.
				var ie ingestEvent
				ps.keys = ps.keys[:0]
				if err := ie.parseEvent(ps, 0, e.ev); err != nil {
					return nil, fmt.Errorf("ledger: prune: log chunk %d: event %d: %w", first, e.seq, err)
				}
				k := string(compactedKeyKV(e.typ, ps.keys))
				if _, ok := compact[k]; !ok {
					if _, ok := newCompact[k]; !ok {
						entries++
						size += len(k)
					}
				}
				if !agentRead {
					if agent, err = chunkAgent(first, v); err != nil {
						return nil, err
					}
					agentRead = true
				}
				val := wire.AppendCommittedEvent(nil, e.seq, e.ev, pc.at, agent, e.agentSeq)
				size += len(val)
				newCompact[k] = val
			}
		}
		// The first chunk always goes (a chunk is at most 256 events and 1 MiB, within
		// the budget), so every step makes progress.
		if len(actions) > 0 && (pruned+len(gone) > maxEvents || arcBytes+evBytes > pruneMaxArchived || !tx.fits(entries, size)) {
			resume = first
			break
		}
		tx.charge(entries, size)
		maps.Copy(compact, newCompact) // later seqs replace earlier ones: the newest stays
		pruned += len(gone)
		archived = append(archived, toArchive...)
		arcBytes += evBytes
		actions = append(actions, a)
	}
	if resume == 0 && limit != 0 {
		resume = limit // every chunk below it was processed; the next step goes on from it
	}

	// Id runs below the dedup cutoff, oldest first.
	dedup := max(m.GetDedupBelow(), prev.GetDedupSeq())
	dropRuns := 0
	for _, r := range p.runs {
		if r.last >= dedup {
			break
		}
		n := r.dir.n + 2
		size := len(prefixRunDir) + len(prefixRunTime) + 16 + r.dir.n*(len(prefixRun)+12)
		if !tx.fits(n, size) {
			res.More = true
			break
		}
		tx.charge(n, size)
		dropRuns++
	}

	// Archive before anything is deleted.
	if tx.archiver != nil && len(archived) > 0 {
		if err := tx.archiver.Archive(context.Background(), archived); err != nil {
			return nil, fmt.Errorf("ledger: archive %d events (seqs %d to %d) before pruning them: %w; this node stops applying until the archive works again",
				len(archived), archived[0].GetSeq(), archived[len(archived)-1].GetSeq(), err)
		}
	}
	for _, a := range actions {
		if a.inSeg {
			tx.segs.add(a.old, -1)
		}
		if a.rewrite != nil {
			if err := tx.putChunk(a.first, a.rewrite); err != nil {
				return nil, err
			}
		} else if err := tx.del(logKey(a.first)); err != nil {
			return nil, err
		}
		for _, k := range a.untype {
			if err := tx.del(k); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range p.runs[:dropRuns] {
		for b := range r.dir.n {
			if err := tx.del(runBlockKey(r.last, uint32(b))); err != nil {
				return nil, err
			}
		}
		if err := tx.del(runDirKey(r.last)); err != nil {
			return nil, err
		}
		if err := tx.del(runTimeKey(r.last)); err != nil {
			return nil, err
		}
	}

	// What is gone now: a type's events below min(its cutoff, the first chunk not
	// processed) (and below its earlier cutoff).
	upTo := func(c, before uint64) uint64 {
		if resume != 0 {
			c = min(c, resume)
		}
		return max(c, before)
	}
	done := func(typ string) uint64 { return upTo(cuts.cut(typ), typeCut(prev, typ)) }
	lw := &storev1.LowWater{
		DefaultBelow: upTo(cuts.cutDefault(), prev.GetDefaultBelow()), ComputedAt: m.GetComputedAt(),
		EventsPruned: prev.GetEventsPruned() + uint64(pruned),
		RunsPruned:   prev.GetRunsPruned() + uint64(dropRuns),
		DedupSeq:     prev.GetDedupSeq(), DedupAt: prev.GetDedupAt(),
	}
	if lw.ComputedAt == nil {
		lw.ComputedAt = timestamppb.New(tx.appendedAt)
	}
	// Listed: the command's types and those listed before, unless now equal to the
	// default.
	listed := map[string]bool{}
	for t := range cuts.types {
		listed[t] = true
	}
	for _, c := range prev.GetTypes() {
		listed[c.GetType()] = true
	}
	lw.Seq = lw.DefaultBelow
	for _, t := range slices.Sorted(maps.Keys(listed)) {
		d := done(t)
		lw.Seq = min(lw.Seq, d)
		if _, inCmd := cuts.types[t]; d != lw.DefaultBelow || inCmd {
			lw.Types = append(lw.Types, &storev1.PruneCutoff{Type: t, Below: d})
		}
	}
	lw.Seq = max(lw.Seq, prev.GetSeq())
	if !res.More && dedup > prev.GetDedupSeq() {
		lw.DedupSeq, lw.DedupAt = dedup, m.GetDedupAt()
	}
	// Once a prune's deletes are done, its last steps sweep part of the key index, at
	// most sweepStepKeys records each and sweepMaxKeys in all (same cursor and marks on
	// every node, so the same records go; the steps end like one command would, which
	// went on the same way).
	swept := 0
	lw.SweepLooked = prev.GetSweepLooked()
	if resume == 0 && !res.More && lw.Seq > 1 {
		below, err := chunkStart(tx.txn, lw.Seq)
		if err != nil {
			return nil, err
		}
		limit := min(sweepStepKeys, sweepMaxKeys-min(int(lw.SweepLooked), sweepMaxKeys))
		looked, end := 0, false
		if swept, looked, end, err = sweepKeyIndex(tx, below, limit); err != nil {
			return nil, err
		}
		lw.SweepLooked += uint64(looked)
		if end || lw.SweepLooked >= uint64(sweepMaxKeys) {
			lw.SweepLooked = 0
		} else {
			res.More = true
		}
	}
	if held, ok, err := firstHeld(tx.txn, lw.Seq); err != nil {
		return nil, err
	} else if ok {
		lw.At = timestamppb.New(held.at)
	}
	if resume != 0 {
		res.More, lw.Resume = true, resume
	}
	// The compacted events last: every iterator opened in this transaction (the sweep,
	// firstHeld) sorts its pending writes first, and these are most of them.
	for _, k := range slices.Sorted(maps.Keys(compact)) {
		if err := tx.put([]byte(k), compact[k]); err != nil {
			return nil, err
		}
	}
	if err := tx.setProto(keyLowWater, lw); err != nil {
		return nil, err
	}
	tx.post.low, tx.post.dropRuns = lw, dropRuns
	res.EventsPruned, res.RunsPruned = uint64(pruned), uint64(dropRuns)
	if pruned > 0 || dropRuns > 0 {
		tx.logger.Info("ledger: pruned", "events", pruned, "archived_now", len(archived), "id_runs", dropRuns, "key_records", swept, "low_water", lw.GetSeq(), "more", res.GetMore())
	}
	return res, nil
}

// pruneEvent is what a prune step reads of one event of a chunk without decoding it.
type pruneEvent struct {
	seq      uint64
	typ      string
	ev       []byte // the Event's bytes, as stored (valid while the chunk's bytes are)
	agentSeq uint64
}

// prunedChunk is what a prune step reads of a chunk without decoding it.
type prunedChunk struct {
	evs []pruneEvent
	at  time.Time // commit time
}

// pruneEvents reads the events of the chunk stored under first (encoded as v) from its
// wire form: seq, type, bytes and agent seq of each, and the commit time.
func pruneEvents(first uint64, v []byte) (prunedChunk, error) {
	var c prunedChunk
	_, _, err := walkChunk(first, v, 0, 0, false, func(ev RawEvent) error {
		typ, err := rawEventType(ev.Event)
		if err != nil {
			return fmt.Errorf("ledger: log chunk %d: event %d: %w", first, ev.Seq, err)
		}
		c.evs = append(c.evs, pruneEvent{seq: ev.Seq, typ: typ, ev: ev.Event, agentSeq: ev.AgentSeq})
		c.at = ev.CommittedAt
		return nil
	})
	return c, err
}

// chunkAgent reads the agent of the chunk stored under first (encoded as v): the last
// occurrence of LogChunk.agent. Only a chunk with a compacted event needs it.
func chunkAgent(first uint64, v []byte) (string, error) {
	var agent string
	err := wire.ScanFields(v, func(num protowire.Number, typ protowire.Type, b []byte, _ uint64) error {
		if num == logChunkAgent && typ == protowire.BytesType {
			agent = string(b)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("ledger: log chunk %d: %w", first, err)
	}
	return agent, nil
}

// rawEventType is the type of an encoded Event, as proto.Unmarshal would decode it: the
// last occurrence of field 2 with the bytes wire type (one of another wire type is an
// unknown field); "" when there is none.
func rawEventType(b []byte) (string, error) {
	var typ []byte
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
		if num == wire.EventType && wt == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", protowire.ParseError(n)
			}
			typ, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, wt, b)
		if n < 0 {
			return "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return string(typ), nil
}

// pruneMarks says which events a prune step must hand the Archiver: per type, those
// after what this node's archive already holds (AheadArchiver.ArchivedThrough, asked
// once per type and step). Without an Archiver none; with one that cannot say, all.
type pruneMarks struct {
	a       Archiver
	through func(ctx context.Context, typ string) (uint64, error) // nil: unknown
	marks   map[string]uint64
}

func archiveMarks(a Archiver) *pruneMarks {
	m := &pruneMarks{a: a, marks: map[string]uint64{}}
	if aa, ok := a.(AheadArchiver); ok {
		m.through = aa.ArchivedThrough
	}
	return m
}

// missing reports whether the event seq of typ must be handed to the Archiver.
func (m *pruneMarks) missing(typ string, seq uint64) bool {
	if m.a == nil {
		return false
	}
	if m.through == nil {
		return true
	}
	w, ok := m.marks[typ]
	if !ok {
		var err error
		if w, err = m.through(context.Background(), typ); err != nil {
			w = 0 // Archive is asked for all of them, and reports what is wrong
		}
		m.marks[typ] = w
	}
	return seq > w
}

// sweepKeyIndex deletes the key index records (k/) whose last chunk is below below (the
// first chunk that may hold an event at or after the low-water: every chunk a record
// lists is at or before its last, so all of them are gone), looking at up to limit
// records from the cursor m/ksweep in key order and leaving the cursor after them
// (deleted after the last record: the next sweep starts over). It stops early when the
// apply budget is spent. Records are keyed by name, value and last chunk, not by age,
// hence a sweep in turns. It returns the records deleted and looked at, and whether it
// reached the end of the index.
func sweepKeyIndex(tx *applyTxn, below uint64, limit int) (deleted, looked int, end bool, err error) {
	start, _, err := getValue(tx.txn.Txn, keyKeySweep)
	if err != nil {
		return 0, 0, false, err
	}
	if len(start) == 0 {
		start = prefixKey
	}
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = prefixKey, false
	it := tx.txn.NewIterator(opts)
	var (
		dels [][]byte
		next []byte // nil: the sweep reached the end and starts over
	)
	for it.Seek(start); it.ValidForPrefix(prefixKey); it.Next() {
		k := it.Item().Key()
		if looked == limit || (seqSuffix(k) < below && !tx.fits(2, len(k)+len(keyKeySweep)+len(k))) {
			next = it.Item().KeyCopy(nil)
			break
		}
		looked++
		if len(k) >= len(prefixKey)+2+4+8 && seqSuffix(k) < below {
			tx.charge(1, len(k))
			dels = append(dels, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	for _, k := range dels {
		if err := tx.del(k); err != nil {
			return 0, 0, false, err
		}
	}
	if next == nil {
		tx.charge(1, len(keyKeySweep))
		return len(dels), looked, true, tx.del(keyKeySweep)
	}
	return len(dels), looked, false, tx.set(keyKeySweep, next)
}

// del deletes k, charged by the caller.
func (tx *applyTxn) del(k []byte) error {
	if err := tx.txn.Delete(k); err != nil {
		return fmt.Errorf("ledger: delete %q: %w", k, err)
	}
	return nil
}

// sparseChunk encodes the chunk stored under first (encoded as v, its events evs) with
// only its events keep (indexes, ascending), their bytes unchanged, and offsets naming
// their seqs.
func sparseChunk(v []byte, first uint64, evs []pruneEvent, keep []int) ([]byte, error) {
	var raw [][]byte
	var out []byte
	for p := v; len(p) > 0; {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		l := protowire.ConsumeFieldValue(num, typ, p[n:])
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		field := p[:n+l]
		p = p[n+l:]
		switch num {
		case 4:
			raw = append(raw, field)
		case chunkOffsetsField:
		default:
			out = append(out, field...)
		}
	}
	if len(raw) != len(evs) {
		return nil, fmt.Errorf("chunk has %d event fields, %d events", len(raw), len(evs))
	}
	var offs []byte
	for _, i := range keep {
		out = append(out, raw[i]...)
		offs = protowire.AppendVarint(offs, evs[i].seq-first)
	}
	out = protowire.AppendTag(out, chunkOffsetsField, protowire.BytesType)
	return protowire.AppendBytes(out, offs), nil
}

// indexedTypes lists the distinct types of the type index (a skip scan: one seek per
// type, each walking the tombstones of the type's pruned entries): at Open, for
// postings.types.
func indexedTypes(txn *badger.Txn) ([]string, error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = prefixType, false
	it := txn.NewIterator(opts)
	defer it.Close()
	var out []string
	for it.Rewind(); it.ValidForPrefix(prefixType); {
		k := it.Item().Key()
		if len(k) < len(prefixType)+2+8 {
			return nil, fmt.Errorf("ledger: malformed type index key %q", k)
		}
		n := int(binary.BigEndian.Uint16(k[len(prefixType):]))
		if len(k) != len(prefixType)+2+n+8 {
			return nil, fmt.Errorf("ledger: malformed type index key %q", k)
		}
		t := string(k[len(prefixType)+2 : len(prefixType)+2+n])
		out = append(out, t)
		it.Seek(cat(typeIndexPrefix(t), u64(^uint64(0)), []byte{0}))
	}
	return out, nil
}

// typeChunks calls fn with the chunks the type index lists for typ that may hold events
// with seqs in [lo, hi), those whose first seq is below lo's chunk start + span and the
// first at or after lo whatever the span (it holds an event of typ in [lo, limit), so a
// caller that goes up to limit makes progress); limit is the first chunk it did not
// list because of span (0 when it listed all).
func typeChunks(txn *logTxn, typ string, lo, hi, span uint64, fn func(first uint64)) (limit uint64, err error) {
	start, err := chunkStart(txn, lo)
	if err != nil {
		return 0, err
	}
	p := typeIndexPrefix(typ)
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = p, false
	it := txn.NewIterator(opts)
	defer it.Close()
	listed := false // a chunk at or after lo was listed
	for it.Seek(cat(p, u64(start))); it.ValidForPrefix(p); it.Next() {
		k := it.Item().Key()
		if len(k) != len(p)+8 {
			continue
		}
		first := seqSuffix(k)
		if first >= hi {
			break
		}
		if listed && first-start >= span {
			return first, nil
		}
		fn(first)
		listed = listed || first >= lo
	}
	return 0, nil
}

// firstLimit is the lower of two listing limits, where 0 means none.
func firstLimit(a, b uint64) uint64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// logChunksSpan times a step's event budget is the span of seqs logChunks lists in one
// step: chunks below the global low-water hold at least one event each and usually
// about a hundred, so a step fills its budget from a fraction of that span; a step over
// sparse chunks that does not is cut short there and the next one goes on. A variable
// for tests.
var logChunksSpan uint64 = 4

// logChunks calls fn with the chunks that may hold seqs in [lo, hi), those whose first
// seq is below lo's chunk start + span; limit is the first chunk it did not list
// because of span (0 when it listed all).
func logChunks(txn *logTxn, lo, hi, span uint64, fn func(first uint64)) (limit uint64, err error) {
	start, err := chunkStart(txn, max(lo, 1))
	if err != nil {
		return 0, err
	}
	opts := badger.DefaultIteratorOptions
	opts.Prefix, opts.PrefetchValues = prefixLog, false
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(logKey(start)); it.ValidForPrefix(prefixLog); it.Next() {
		first := seqSuffix(it.Item().Key())
		if first >= hi {
			break
		}
		if first-start >= span {
			return first, nil
		}
		fn(first)
	}
	return 0, nil
}

// loadLowWater reads m/low; nil when nothing was pruned.
func loadLowWater(txn *badger.Txn) (*storev1.LowWater, error) {
	lw := &storev1.LowWater{}
	ok, err := getProto(txn, keyLowWater, lw)
	if err != nil || !ok {
		return nil, err
	}
	return lw, nil
}

// TypeCutoff is the cutoff of events of type typ in lw (nil: 0): the events of it below
// were pruned.
func TypeCutoff(lw *storev1.LowWater, typ string) uint64 { return typeCut(lw, typ) }

// PruneNeeded reports whether applying m now would remove anything or move a mark:
// a cutoff past what earlier prunes did (within the flushed log, the only part a prune
// touches), a prune in steps not finished, or id runs below the dedup cutoff. The
// leader asks before proposing, so an idle cluster does not append a prune every
// interval.
func (l *Ledger) PruneNeeded(m *storev1.PruneLedger) (bool, error) {
	h, err := l.acquire()
	if err != nil {
		return false, err
	}
	defer l.release(h)
	p := h.post
	p.mu.RLock()
	defer p.mu.RUnlock()
	prev := p.low
	if prev.GetResume() != 0 || prev.GetSweepLooked() != 0 {
		return true, nil
	}
	cuts := &pruneCuts{types: map[string]uint64{}, def: m.GetDefaultBelow(), prev: prev, ceil: p.flushed + 1}
	for _, c := range m.GetTypes() {
		cuts.types[c.GetType()] = c.GetBelow()
	}
	// Seq 1 is the first: a cutoff of 1 removes nothing.
	if cuts.cutDefault() > max(prev.GetDefaultBelow(), 1) {
		return true, nil
	}
	for t := range cuts.types {
		if cuts.cut(t) > max(typeCut(prev, t), 1) {
			return true, nil
		}
	}
	for _, c := range prev.GetTypes() {
		if cuts.cut(c.GetType()) > max(c.GetBelow(), 1) {
			return true, nil
		}
	}
	return len(p.runs) > 0 && p.runs[0].last < m.GetDedupBelow(), nil
}

// DedupCutoff is the dedup cutoff for ids committed before t: one past the last seq of
// the newest id run committed before t (1 when none). Runs record their commit time
// (rt/), so this holds after retention removed their events, where SeqAtTime cannot
// tell. A run of layout 5 without a time counts as older than the next run that has
// one.
func (l *Ledger) DedupCutoff(t time.Time) (uint64, error) {
	h, err := l.acquire()
	if err != nil {
		return 0, err
	}
	defer l.release(h)
	h.post.mu.RLock()
	defer h.post.mu.RUnlock()
	cut, tn := uint64(1), t.UnixNano()
	for i, r := range h.post.runs {
		if r.at == 0 {
			continue
		}
		if r.at >= tn {
			break
		}
		cut = h.post.runs[i].last + 1
	}
	return cut, nil
}

// TypesLowWater is the earliest seq from which the log still holds every event of the
// given types (the least of their cutoffs; events of these types below it are gone,
// the newest per key kept by compaction), and the commit time retention recorded for
// the whole log's low-water mark. 1 when nothing of them was pruned.
func (l *Ledger) TypesLowWater(types []string) (uint64, time.Time, error) {
	lw, err := l.Retention()
	if err != nil {
		return 0, time.Time{}, err
	}
	if lw == nil || len(types) == 0 {
		return 1, time.Time{}, nil
	}
	var at time.Time
	if lw.GetAt() != nil {
		at = lw.GetAt().AsTime()
	}
	return typesCut(lw, types), at, nil
}

// highestCut is the highest cutoff in lw (its default or a type's): chunks that start
// below it hold only events of types kept longer than the shortest-lived one (0 when
// nothing was pruned).
func highestCut(lw *storev1.LowWater) uint64 {
	c := lw.GetDefaultBelow()
	for _, t := range lw.GetTypes() {
		c = max(c, t.GetBelow())
	}
	return c
}

// typesCut is the least cutoff of types in lw (1 when lw is nil or types empty).
func typesCut(lw *storev1.LowWater, types []string) uint64 {
	if lw == nil || len(types) == 0 {
		return 1
	}
	cut := uint64(0)
	for i, t := range types {
		if c := typeCut(lw, t); i == 0 || c < cut {
			cut = c
		}
	}
	return max(cut, 1)
}

// CompactedHolds reports whether the compacted base holds an event of typ with keys
// (the newest of that type and keys that a prune removed from the log, when the
// Retention document compacts typ): a view that dropped what retention pruned keeps
// what a view rebuilt from the base would hold.
func (l *Ledger) CompactedHolds(typ string, keys map[string]string) (bool, error) {
	found := false
	err := l.view(func(txn *badger.Txn) error {
		_, err := txn.Get(compactedKey(typ, keys))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ledger: read the compacted base: %w", err)
	}
	return found, nil
}

// AheadArchiver is an Archiver that knows what it holds: ArchivedThrough(typ) is the
// highest seq of typ archived, every event of typ up to it being in the archive, and
// Archive skips events at or below it. ArchiveAhead needs it.
type AheadArchiver interface {
	Archiver
	ArchivedThrough(ctx context.Context, typ string) (uint64, error)
}

// ArchiveAhead hands a the events still in the log that are below the cutoffs of m (per
// type, else the default) and above what a holds of their type, in seq order, at most
// about maxEvents of them (whole chunks); more says there are others. Every node runs
// it in the background before the leader's prune reaches those events, so the Apply of
// PRUNE_LEDGER finds them archived and only deletes (Archive skips what it holds). It
// reads committed data only and writes nothing to the ledger: what a prune removes is
// decided by the PRUNE_LEDGER command alone, whatever this archived.
func (l *Ledger) ArchiveAhead(ctx context.Context, a AheadArchiver, m *storev1.PruneLedger, maxEvents int) (archived int, more bool, err error) {
	low, err := l.Retention()
	if err != nil {
		return 0, false, err
	}
	cutOf := map[string]uint64{}
	for _, c := range m.GetTypes() {
		cutOf[c.GetType()] = c.GetBelow()
	}
	type span struct{ lo, hi uint64 }
	spans := map[string]span{}
	var evs []*eventv1.CommittedEvent
	err = l.viewLogTypes(func(txn *logTxn, types []string) error {
		cand := map[uint64]bool{}
		var limit uint64 // the first chunk a listing stopped at (0: none did)
		for _, t := range types {
			hi, ok := cutOf[t]
			if !ok {
				hi = m.GetDefaultBelow()
			}
			w, err := a.ArchivedThrough(ctx, t)
			if err != nil {
				return err
			}
			lo := max(w+1, typeCut(low, t), 1)
			if hi <= lo {
				continue
			}
			spans[t] = span{lo, hi}
			// As far as one call can take, as in a prune step (applyPruneLedger).
			lim, err := typeChunks(txn, t, lo, hi, uint64(maxEvents)*logChunksSpan, func(first uint64) { cand[first] = true })
			if err != nil {
				return err
			}
			limit = firstLimit(limit, lim)
		}
		for _, first := range slices.Sorted(maps.Keys(cand)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(evs) >= maxEvents || (limit != 0 && first >= limit) {
				more = true
				return nil
			}
			v, _, _, ok, err := txn.getChunk(first)
			if err != nil {
				return fmt.Errorf("ledger: archive ahead: read log chunk %d: %w", first, err)
			}
			if !ok {
				continue // pruned since the index was read
			}
			c, err := decodeChunk(logKey(first), v)
			if err != nil {
				return err
			}
			for i, ae := range c.GetEvents() {
				sp, ok := spans[ae.GetEvent().GetType()]
				if s := chunkSeq(c, i); ok && s >= sp.lo && s < sp.hi {
					evs = append(evs, committed(c, i))
				}
			}
		}
		more = limit != 0 // a listing stopped short: the next call goes on from there
		return nil
	})
	if err != nil || len(evs) == 0 {
		return 0, more, err
	}
	if err := a.Archive(ctx, evs); err != nil {
		return 0, false, fmt.Errorf("ledger: archive %d events ahead of their prune (seqs %d to %d): %w", len(evs), evs[0].GetSeq(), evs[len(evs)-1].GetSeq(), err)
	}
	return len(evs), more, nil
}
