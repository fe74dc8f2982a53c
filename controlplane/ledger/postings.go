package ledger

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// The business-key index (layout 3, DESIGN.md "Key index") is kept as posting lists:
// which chunks hold at least one event with name=value. The lists of the chunks since
// the last flush are in memory (postings); Apply flushes them, one k/ record per
// distinct name=value, when they reach flushSeqs seqs, flushKeys distinct keys or
// flushBytes of records. A key that appears in many chunks between flushes (a SKU that
// moves often, a location) costs one Badger write per flush instead of one per chunk.
//
// The flush points depend only on the log: Apply flushes in the transaction of the
// entry that reaches a threshold, and what is pending is exactly the chunks after
// m/kflush, so replicas at the same applied index hold the same records and a restarted
// or restored node rebuilds the same pending lists from its chunks.
const (
	flushSeqs  = 16384
	flushKeys  = 16384
	flushBytes = 2 << 20
)

// smallIDBatch: an Apply that commits fewer ids adds them to the newest pending map
// instead of keeping its own.
const smallIDBatch = 256

var keyKeyFlushed = []byte("m/kflush") // u64BE: the k/ records cover every chunk up to this seq

// postings is the unflushed part of the business-key index of one database.
//
// Apply is the only writer: it reads the lists without the lock (no one else writes)
// and holds mu while it commits and folds its additions in, so that a reader that takes
// mu.RLock around opening its Badger transaction and copying lists sees the lists that
// belong to that transaction's state.
//
// It holds the unflushed part of the id index too (idruns.go): the ids committed since
// m/kflush, the in-memory part of every run, and the ledger-wide id filter.
type postings struct {
	mu      sync.RWMutex
	lists   map[string]*pendList // key index prefix -> chunk first seqs
	flushed uint64               // m/kflush
	size    int                  // bytes of the records a flush would write, keys + values

	// adds is Apply's alone (readers never touch it): an entry per prefix an Apply
	// looked up since the last flush, holding the last chunk listed for it and what the
	// current Apply adds, so an event finds all it needs of a prefix in one lookup.
	adds map[string]*addList

	ids     []map[string]uint64 // id key -> seq for the events after m/kflush, one map per Apply
	idCount int
	idSize  int         // what writing ids in a run costs (idCost)
	runs    []*idRun    // ascending
	filter  *idFilter   // over every id key: the runs' and the pending ones
	space   filterSpace // where filters are allocated (filterspace.go)

	grow *filterBuild // a larger filter being built (idfilter.go); Apply's alone

	low *storev1.LowWater // m/low: what retention removed; nil when nothing was (prune.go)
	// droppedIDs counts the ids of the runs prunes dropped that the filter in place
	// still holds (those dropped since its build started): it is rebuilt once they are
	// half of what the ledger holds (filterStale).
	droppedIDs int

	// types holds every type the type index (t/) has listed since the database was
	// opened, and those it held then: a superset of the types it holds (a type whose
	// entries were all pruned stays). Listing them from the index instead walked the
	// tombstones of every pruned entry at each prune step (indexedTypes).
	types map[string]bool
}

func newPostings(flushed uint64) *postings {
	return &postings{lists: make(map[string]*pendList), flushed: flushed, types: map[string]bool{}}
}

// pendList is a prefix's pending list. Its addList points at it, so folding an Apply's
// additions in costs no map operation for a prefix already pending.
type pendList struct {
	chunks []uint64 // chunk first seqs, ascending
}

// pendingID returns the seq of pending id key k.
func (p *postings) pendingID(k string) (uint64, bool) {
	for i := len(p.ids) - 1; i >= 0; i-- {
		if s, ok := p.ids[i][k]; ok {
			return s, true
		}
	}
	return 0, false
}

// eachPendingID calls fn for every pending id key and its seq.
func (p *postings) eachPendingID(fn func(k string, seq uint64)) {
	for _, m := range p.ids {
		for k, s := range m {
			fn(k, s)
		}
	}
}

// idSeq returns the seq of the event with id key k: the filter is asked first (it holds
// every id), then the pending ids and the runs. Call with mu held, or from Apply.
func (p *postings) idSeq(txn *badger.Txn, k []byte) (uint64, bool, error) {
	return p.idSeqHash(txn, k, p.filter.hash(k))
}

// idSeqHash is idSeq of id key k, whose hash by p.filter is h.
func (p *postings) idSeqHash(txn *badger.Txn, k []byte, h uint64) (uint64, bool, error) {
	if p.filter.absentHash(h) {
		return 0, false, nil
	}
	if s, ok := p.pendingID(string(k)); ok {
		return s, true, nil
	}
	return lookupRuns(txn, p.runs, k)
}

// last returns the last chunk listed for prefix p, 0 if none.
func (p *postings) last(prefix string) uint64 {
	if l := p.lists[prefix]; l != nil && len(l.chunks) > 0 {
		return l.chunks[len(l.chunks)-1]
	}
	return 0
}

// recordSize is what a k/ record of prefix p costs before its list.
func recordSize(p string) int { return len(p) + 8 }

// copyList returns a copy of the pending list of prefix p. Call with mu held.
func (p *postings) copyList(prefix []byte) []uint64 {
	if l := p.lists[string(prefix)]; l != nil {
		return slices.Clone(l.chunks)
	}
	return nil
}

// postingAdds are one Apply's additions to the pending lists, with the cost of writing
// them in a flush (charged to the Apply's budget as they are made, so that a flush in
// the same transaction always fits).
type postingAdds struct {
	pend    *postings
	touched []*addList // the entries this Apply added to, in first-add order
	keys    int        // prefixes new to pend
	size    int

	ids    map[string]uint64 // id key -> seq, committed by this Apply
	idSize int
	run    *idRun // the run a flush wrote

	low      *storev1.LowWater // set by a PRUNE_LEDGER: the new m/low
	dropRuns int               // set by a PRUNE_LEDGER: the oldest runs it deleted
	types    []string          // types the type index lists for the first time since open
}

// indexType notes that this Apply lists typ in the type index.
func (a *postingAdds) indexType(typ string) {
	if !a.pend.types[typ] && !slices.Contains(a.types, typ) {
		a.types = append(a.types, typ)
	}
}

// addList is a prefix's entry in postings.adds.
type addList struct {
	key    string
	pend   *pendList // the prefix's pending list; nil until an Apply that added to it commits
	chunks []uint64  // chunk first seqs added by the current Apply, ascending
	last   uint64    // the last chunk listed for the prefix, pending or added; 0 if none
}

// addID records that the event with id key k got seq; the caller charged idCost(k).
func (a *postingAdds) addID(k []byte, seq uint64) {
	if a.ids == nil {
		a.ids = make(map[string]uint64)
	}
	a.ids[string(k)] = seq
	_, size := idCost(k)
	a.idSize += size
}

// entry returns the entry of prefix p (p is copied when the entry is made).
func (a *postingAdds) entry(p []byte) *addList {
	if e, ok := a.pend.adds[string(p)]; ok {
		return e
	}
	if a.pend.adds == nil {
		a.pend.adds = make(map[string]*addList)
	}
	e := &addList{key: string(p), pend: a.pend.lists[string(p)]}
	if e.pend != nil && len(e.pend.chunks) > 0 {
		e.last = e.pend.chunks[len(e.pend.chunks)-1]
	}
	a.pend.adds[e.key] = e
	return e
}

// cost returns the entries and bytes adding chunk first to prefix p (whose entry is e)
// would add to a flush; pass them to add.
func (a *postingAdds) cost(e *addList, p []byte, first uint64) (entries, size int) {
	if e.last == 0 {
		return 1, recordSize(string(p)) + protowire.SizeVarint(first)
	}
	return 0, protowire.SizeVarint(first - e.last)
}

// add records that chunk first holds the prefix of e, at the cost cost returned (and
// the caller charged).
func (a *postingAdds) add(e *addList, first uint64, entries, size int) {
	a.keys += entries
	a.size += size
	if len(e.chunks) == 0 {
		a.touched = append(a.touched, e)
	}
	e.chunks = append(e.chunks, first)
	e.last = first
}

// due reports whether Apply must flush after an entry whose last seq is lastSeq.
func (a *postingAdds) due(lastSeq uint64) bool {
	return len(a.pend.lists)+a.keys >= flushKeys || a.pend.size+a.size >= flushBytes ||
		a.pend.idSize+a.idSize >= flushIDBytes || lastSeq-a.pend.flushed >= flushSeqs
}

// flush writes every pending and added list as k/ records and moves m/kflush to
// lastSeq. The records were charged as they were added.
func (a *postingAdds) flush(tx *applyTxn, lastSeq uint64) error {
	write := func(p string, chunks []uint64) error {
		return tx.put(cat([]byte(p), u64(chunks[len(chunks)-1])), encodePosting(chunks))
	}
	for p, pl := range a.pend.lists {
		l := pl.chunks
		if e := a.pend.adds[p]; e != nil && len(e.chunks) > 0 {
			l = append(slices.Clip(l), e.chunks...)
		}
		if err := write(p, l); err != nil {
			return err
		}
	}
	for _, e := range a.touched {
		if e.pend == nil { // not pending before this Apply
			if err := write(e.key, e.chunks); err != nil {
				return err
			}
		}
	}
	if a.pend.idCount+len(a.ids) > 0 {
		var err error
		if a.run, err = writeRun(tx, a.pend.space, lastSeq, append(slices.Clip(a.pend.ids), a.ids)); err != nil {
			return err
		}
		// When the run's ids were committed, for the dedup window (DedupCutoff) after
		// retention removed their events.
		a.run.at = tx.appendedAt.UnixNano()
		if err := tx.set(runTimeKey(lastSeq), u64(uint64(a.run.at))); err != nil {
			return err
		}
	}
	return tx.set(keyKeyFlushed, u64(lastSeq))
}

// commit folds the additions into the pending lists after the Apply committed; flushed
// says whether it flushed through lastSeq. Call with pend.mu held.
func (a *postingAdds) commit(flushed bool, lastSeq uint64) {
	p := a.pend
	if a.low != nil {
		p.low = a.low
	}
	for _, t := range a.types {
		p.types[t] = true
	}
	if a.dropRuns > 0 {
		for _, r := range p.runs[:a.dropRuns] {
			p.droppedIDs += r.n
		}
		p.runs = slices.Clone(p.runs[a.dropRuns:])
	}
	if flushed {
		// Sized like the ones they replace: the next span is likely alike.
		p.lists, p.flushed, p.size = make(map[string]*pendList, len(p.lists)), lastSeq, 0
		p.adds = make(map[string]*addList, len(p.adds)) // their last chunks are flushed
		p.ids, p.idCount, p.idSize = nil, 0, 0
		if a.run != nil {
			p.runs = append(p.runs, a.run)
		}
		return
	}
	for _, e := range a.touched {
		if e.pend == nil {
			e.pend = &pendList{}
			p.lists[e.key] = e.pend
		}
		e.pend.chunks = append(e.pend.chunks, e.chunks...)
		e.chunks = e.chunks[:0]
	}
	p.size += a.size
	switch {
	case len(a.ids) == 0:
	case len(a.ids) < smallIDBatch && len(p.ids) > 0:
		// Small Applies are merged, so lookups look in few maps whatever the batch size.
		for k, s := range a.ids {
			p.ids[len(p.ids)-1][k] = s
		}
	default:
		p.ids = append(p.ids, a.ids)
	}
	p.idCount += len(a.ids)
	p.idSize += a.idSize
}

// encodePosting encodes an ascending list of chunk seqs: the first as a uvarint, then
// the differences.
func encodePosting(chunks []uint64) []byte {
	b := make([]byte, 0, 2*len(chunks)+8)
	prev := uint64(0)
	for _, c := range chunks {
		b = binary.AppendUvarint(b, c-prev)
		prev = c
	}
	return b
}

// decodePosting decodes a k/ record's list; last is the seq in its key, which must be
// the list's last element.
func decodePosting(v []byte, last uint64) ([]uint64, error) {
	var out []uint64
	prev := uint64(0)
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 || (len(out) > 0 && d == 0) {
			return nil, fmt.Errorf("ledger: key index record %d: bad posting list", last)
		}
		prev += d
		out = append(out, prev)
		v = v[n:]
	}
	if len(out) == 0 || prev != last {
		return nil, fmt.Errorf("ledger: key index record %d: posting list ends at %d", last, prev)
	}
	return out, nil
}

// loadPostings rebuilds the in-memory state of db: the pending key index lists and ids
// from the chunks after m/kflush, the runs' parts, and the id filter.
func loadPostings(db *badger.DB, segs *segments, space filterSpace) (*postings, error) {
	var p *postings
	err := db.View(func(txn *badger.Txn) error {
		flushed, err := getU64(txn, keyKeyFlushed)
		if err != nil {
			return err
		}
		last, err := getU64(txn, keySeq)
		if err != nil {
			return err
		}
		p = newPostings(flushed)
		p.space = space
		if p.low, err = loadLowWater(txn); err != nil {
			return err
		}
		types, err := indexedTypes(txn)
		if err != nil {
			return err
		}
		for _, t := range types {
			p.types[t] = true
		}
		// Sized for the ids the ledger holds: those since the dedup cutoff (retention
		// deletes the runs below it), not every id ever committed.
		p.filter = space.idFilter(int(2 * (last - min(last, p.low.GetDedupSeq()))))
		if p.runs, err = loadRuns(txn, space, p.filter); err != nil {
			return err
		}
		a := &postingAdds{pend: p}
		var keys []kv
		err = scanLog(&logTxn{Txn: txn, segs: segs}, flushed+1, func(c *storev1.LogChunk) bool {
			first := c.GetFirstSeq()
			for i, ae := range c.GetEvents() {
				ev := ae.GetEvent()
				if k := idKey(c.GetAgent(), ev.GetId()); k != nil {
					a.addID(k, chunkSeq(c, i))
					p.filter.add(k)
				}
				keys = keys[:0]
				for name, value := range ev.GetKeys() {
					keys = append(keys, kv{name, value})
				}
				for _, e := range indexedKeys(keys) {
					pr := keyIndexPrefix(e.name, e.value)
					if l := a.entry(pr); l.last != first {
						n, sz := a.cost(l, pr, first)
						a.add(l, first, n, sz)
					}
				}
			}
			return false
		})
		if err != nil {
			return err
		}
		a.commit(false, 0)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: rebuild key and id index state: %w", err)
	}
	return p, nil
}
