package ledger

import (
	"errors"
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// idFilter is an in-memory Bloom filter over id keys. The ledger keeps one over every
// id it holds (postings.filter), which Apply asks first: "absent" is certain, so a new
// event (almost every event) skips the id lookup. Each id run has one over its own ids
// (idruns.go), so a lookup reads only the runs that may hold the id. Filters are built
// when the database is opened or restored, and the ledger-wide one again, larger, when
// it fills. A filter never changes a result, only how it is computed, so replicas with
// filters in different states stay identical.
//
// It is a blocked Bloom filter: every key sets its bits in one 512-bit block, so a
// lookup touches one cache line. The ledger-wide filter has 16 bits per id (about 0.1%
// false positives when full), since each false positive then asks every run's filter;
// a run's filter has 10 (about 1%), since it only costs a block read.
type idFilter struct {
	mu       sync.Mutex
	seed     maphash.Seed
	blocks   [][8]uint64
	hashes   uint32
	n        int    // keys added
	capacity int    // keys it was sized for
	warmed   uint64 // what warm read, kept so that its loads are not optimized away
	// slab is the mapping the blocks are in when it is shared with other filters
	// (runFilters): referenced so that it stays mapped while this filter is reachable.
	slab *filterSlab
}

// filterMinCapacity is the smallest capacity a filter is sized for (a variable so tests
// can make filters fill up).
var filterMinCapacity = 1 << 22

// newIDFilter returns a ledger-wide filter on the heap (filterSpace.idFilter).
func newIDFilter(capacity int) *idFilter { return filterSpace{}.idFilter(capacity) }

// newRunFilter returns a run's filter on the heap (filterSpace.runFilter).
func newRunFilter(n int) *idFilter {
	f, _ := filterSpace{}.runFilter(n, 0)
	return f
}

func newFilter(capacity, bitsPerID int, hashes uint32) *idFilter {
	return &idFilter{seed: maphash.MakeSeed(), blocks: make([][8]uint64, filterBlocks(capacity, bitsPerID)), hashes: hashes, capacity: capacity}
}

// filterBlocks is the number of 512-bit blocks of a filter for capacity ids at
// bitsPerID: a power of two.
func filterBlocks(capacity, bitsPerID int) int {
	nb := max(1, capacity*bitsPerID/512)
	return 1 << bits.Len(uint(nb-1))
}

// probeHash is probe of the key whose hash is h (maphash.Bytes and maphash.String give
// the same hash for the same bytes).
func (f *idFilter) probeHash(h uint64, set bool) bool {
	blk := &f.blocks[(h>>32)&uint64(len(f.blocks)-1)]
	a, b := uint32(h), uint32(h>>23)|1
	all := true
	for i := range f.hashes {
		bit := (a + i*b) & 511
		w, m := bit>>6, uint64(1)<<(bit&63)
		if set {
			blk[w] |= m
		} else if blk[w]&m == 0 {
			all = false
			break
		}
	}
	runtime.KeepAlive(f) // blk points into blocks, which may be a mapping (filterspace.go)
	return all
}

// absent reports whether k is certainly not in the id index. It is false (unknown)
// until the filter is built.
func (f *idFilter) absent(k []byte) bool { return f.absentHash(f.hash(k)) }

// hash is the hash of id key k that the filter's probes use.
func (f *idFilter) hash(k []byte) uint64 { return maphash.Bytes(f.seed, k) }

// absentHash is absent of the key whose hash is h.
func (f *idFilter) absentHash(h uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.probeHash(h, false)
}

// warm reads the block of each hash in hs, so that the probes of a batch that follow
// find them in cache. Blocks are spread over megabytes, so a probe usually waits for
// memory; loads issued together here wait in parallel, where probes one by one wait in
// turn (each behind its own lock operations). It changes no result.
func (f *idFilter) warm(hs []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.warmLocked(hs)
}

// warmLocked is warm with f.mu held.
func (f *idFilter) warmLocked(hs []uint64) {
	mask := uint64(len(f.blocks) - 1)
	var x uint64
	for _, h := range hs {
		x |= f.blocks[(h>>32)&mask][0]
	}
	f.warmed = x
}

// add records k; full is true when the filter holds more keys than it was sized for.
func (f *idFilter) add(k []byte) (full bool) {
	return f.addHash(f.hash(k))
}

// addString is add of a key held as a string.
func (f *idFilter) addString(k string) (full bool) {
	return f.addHash(maphash.String(f.seed, k))
}

// addKeys records every key of ks, as add does one by one, faster: the keys are hashed
// first, then their blocks are read together (as warm does) and set under one lock, so
// the reads of blocks spread over megabytes wait for memory in parallel rather than in
// turn. hs is scratch space (reused when large enough), returned for the next call.
func (f *idFilter) addKeys(ks [][]byte, hs []uint64) []uint64 {
	hs = hs[:0]
	for _, k := range ks {
		hs = append(hs, f.hash(k))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i < len(hs); i += addKeysSlice {
		// In slices of addKeysSlice hashes: the blocks warmLocked reads are still in
		// cache when their bits are set.
		part := hs[i:min(len(hs), i+addKeysSlice)]
		f.warmLocked(part)
		for _, h := range part {
			f.probeHash(h, true)
		}
	}
	f.n += len(ks)
	return hs
}

// addKeysSlice is how many blocks addKeys reads ahead of setting them: 64 KiB of blocks.
const addKeysSlice = 1024

func (f *idFilter) addHash(h uint64) (full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probeHash(h, true)
	f.n++
	return f.n > f.capacity
}

// filterBuild is a ledger-wide filter being built in the background from the runs up
// to lastRun.
type filterBuild struct {
	done    chan struct{}
	lastRun uint64 // the last run it reads (0: none)
	dropped int    // postings.droppedIDs when it started: ids it holds though dropped
	filter  *idFilter
	err     error
}

// filterStale reports whether the ids of dropped runs the filter in place still holds
// are at least half of the ids the ledger holds (runs and pending). Apply's alone.
func (p *postings) filterStale() bool {
	return p.droppedIDs > 0 && 2*p.droppedIDs >= p.heldIDs()
}

// heldIDs is how many ids the ledger holds: its runs' and the pending ones.
func (p *postings) heldIDs() int {
	held := p.idCount
	for _, r := range p.runs {
		held += r.n
	}
	return held
}

var errFilterStopped = errors.New("ledger: id filter build stopped: ledger closed or replaced")

// growFilter is called by Apply after each commit. When the ledger-wide filter holds
// more ids than it was sized for (full: more false positives, never a wrong answer), it
// starts building one four times larger in the background from the runs, which never
// change; when that is done, it adds what came since (newer runs, the pending ids) and
// puts it in place. Apply never waits for the runs to be read.
//
// After prunes deleted id runs, the filter still holds their ids: once those are half
// of the ids the ledger holds (filterStale; Apply asks after a prune dropped runs), it
// is rebuilt the same way from the runs left, sized for them, so its memory follows the
// dedup window rather than history. Not at every prune: a filter sized for twice what
// is held is not full before that (it holds at most 1.5 times what is held), and with a
// dedup window as short as the prune interval every prune dropped runs, so every node
// read the whole window's ids again at every interval. A build that started before a
// prune dropped runs is put in place (it only holds more) and another one starts if
// enough were dropped meanwhile.
func (l *Ledger) growFilter(h *handle, full bool) {
	p := h.post
	if g := p.grow; g != nil {
		select {
		case <-g.done:
		default:
			return
		}
		p.grow = nil
		if g.err != nil {
			l.logger.Warn("ledger: new id filter not built; keeping the current one", "err", g.err)
			return
		}
		err := h.db.View(func(txn *badger.Txn) error {
			for _, r := range p.runs {
				if r.last <= g.lastRun {
					continue
				}
				if err := r.eachID(txn, func(k []byte) { g.filter.add(k) }); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			l.logger.Warn("ledger: new id filter not completed; keeping the current one", "err", err)
			return
		}
		p.eachPendingID(func(k string, _ uint64) { g.filter.addString(k) })
		p.mu.Lock()
		p.filter = g.filter
		p.mu.Unlock()
		p.droppedIDs -= g.dropped // those dropped since it started, it still holds
		l.logger.Info("ledger: id filter rebuilt", "capacity", g.filter.capacity)
		full = p.filterStale() // enough dropped meanwhile: build again without them
	}
	if !full {
		return
	}
	l.mu.Lock()
	if l.closed || h.retired {
		l.mu.Unlock()
		return
	}
	h.refs++
	l.mu.Unlock()
	held := p.heldIDs()
	capacity := 4 * p.filter.capacity
	if p.filter.n <= p.filter.capacity {
		capacity = 2 * held // not full: rebuilt after a prune, for what is held
	}
	g := &filterBuild{done: make(chan struct{}), dropped: p.droppedIDs, filter: p.space.idFilter(max(capacity, 2*held))}
	runs := slices.Clone(p.runs)
	if len(runs) > 0 {
		g.lastRun = runs[len(runs)-1].last
	}
	p.grow = g
	stopped := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed || h.retired
	}
	go func() {
		defer l.release(h)
		defer close(g.done)
		g.err = h.db.View(func(txn *badger.Txn) error {
			for _, r := range runs {
				if stopped() {
					return errFilterStopped
				}
				if err := r.eachID(txn, func(k []byte) { g.filter.add(k) }); err != nil {
					return err
				}
			}
			return nil
		})
	}()
}
