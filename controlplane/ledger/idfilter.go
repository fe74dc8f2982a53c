package ledger

import (
	"hash/maphash"
	"math/bits"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// idFilter is an in-memory Bloom filter over the id index keys of the ledger. Apply asks
// it before reading the id index: "absent" is certain, so a new event (almost every
// event) skips a Badger read, which was a fifth of a replica's CPU under ingest. It is
// built in the background from the id index after Open and Restore, and rebuilt larger
// when it fills; until it is ready Apply reads the index for every event. A filter never
// changes a result, only how it is computed, so replicas with filters in different
// states stay identical.
//
// It is a blocked Bloom filter: every key sets filterHashes bits in one 512-bit block,
// so a lookup touches one cache line. With filterBitsPerID bits per id the false
// positive rate is about 1%.
type idFilter struct {
	mu       sync.Mutex
	seed     maphash.Seed
	blocks   [][8]uint64
	n        int // keys added
	capacity int // keys it was sized for
	ready    bool
}

const (
	filterBitsPerID = 10
	filterHashes    = 7
)

// filterMinCapacity is the smallest capacity a filter is sized for (a variable so tests
// can make filters fill up).
var filterMinCapacity = 1 << 22

func newIDFilter(capacity int) *idFilter {
	capacity = max(capacity, filterMinCapacity)
	nb := max(1, capacity*filterBitsPerID/512)
	nb = 1 << bits.Len(uint(nb-1)) // a power of two
	return &idFilter{seed: maphash.MakeSeed(), blocks: make([][8]uint64, nb), capacity: capacity}
}

func (f *idFilter) probe(k []byte, set bool) bool {
	h := maphash.Bytes(f.seed, k)
	blk := &f.blocks[(h>>32)&uint64(len(f.blocks)-1)]
	a, b := uint32(h), uint32(h>>23)|1
	all := true
	for i := range uint32(filterHashes) {
		bit := (a + i*b) & 511
		w, m := bit>>6, uint64(1)<<(bit&63)
		if set {
			blk[w] |= m
		} else if blk[w]&m == 0 {
			all = false
			break
		}
	}
	return all
}

// absent reports whether k is certainly not in the id index. It is false (unknown)
// until the filter is built.
func (f *idFilter) absent(k []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready && !f.probe(k, false)
}

// add records k; full is true when the filter holds more keys than it was sized for.
func (f *idFilter) add(k []byte) (full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probe(k, true)
	f.n++
	return f.n > f.capacity
}

func (f *idFilter) isReady() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// startFilter installs a new, empty filter for h and builds it in the background from
// h's id index. Ids Apply commits from now on are added by Apply; the builder reads a
// snapshot taken after the install, so together they cover every id. The caller holds
// applyMu (or is Open, before anyone else has the ledger).
func (l *Ledger) startFilter(h *handle, capacity int) {
	f := newIDFilter(capacity)
	l.ids.Store(f)
	l.mu.Lock()
	if l.closed || h.retired {
		l.mu.Unlock()
		return
	}
	h.refs++
	l.mu.Unlock()
	go func() {
		defer l.release(h)
		if err := l.buildFilter(h, f); err != nil {
			l.logger.Warn("ledger: id filter not built; every new event reads the id index", "err", err)
		}
	}()
}

// buildFilter adds every id index key of h to f and marks it ready. It gives up, leaving
// f not ready, when h is replaced or the ledger closes.
func (l *Ledger) buildFilter(h *handle, f *idFilter) error {
	var batch [][]byte
	flush := func() {
		f.mu.Lock()
		for _, k := range batch {
			f.probe(k, true)
		}
		f.n += len(batch)
		f.mu.Unlock()
		batch = batch[:0]
	}
	stopped := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed || h.retired || l.ids.Load() != f
	}
	err := h.db.View(func(txn *badger.Txn) error {
		for _, prefix := range [][]byte{prefixID, prefixLongID} {
			opts := badger.DefaultIteratorOptions
			opts.PrefetchValues = false
			opts.Prefix = prefix
			it := txn.NewIterator(opts)
			for it.Rewind(); it.Valid(); it.Next() {
				batch = append(batch, it.Item().KeyCopy(nil))
				if len(batch) == 4096 {
					flush()
					if stopped() {
						it.Close()
						return nil
					}
				}
			}
			it.Close()
		}
		flush()
		return nil
	})
	if err != nil {
		return err
	}
	if stopped() {
		return nil
	}
	f.mu.Lock()
	f.ready = true
	n := f.n
	f.mu.Unlock()
	l.logger.Debug("ledger: id filter ready", "ids", n, "capacity", f.capacity)
	return nil
}
