package ledger

import (
	"fmt"
	"hash/maphash"
	"math/bits"
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
	n        int // keys added
	capacity int // keys it was sized for
}

// filterMinCapacity is the smallest capacity a filter is sized for (a variable so tests
// can make filters fill up).
var filterMinCapacity = 1 << 22

// newIDFilter returns the ledger-wide filter, sized for at least filterMinCapacity ids.
func newIDFilter(capacity int) *idFilter { return newFilter(max(capacity, filterMinCapacity), 16, 11) }

// newRunFilter returns the filter of a run of n ids.
func newRunFilter(n int) *idFilter { return newFilter(max(n, 1), 10, 7) }

func newFilter(capacity, bitsPerID int, hashes uint32) *idFilter {
	nb := max(1, capacity*bitsPerID/512)
	nb = 1 << bits.Len(uint(nb-1)) // a power of two
	return &idFilter{seed: maphash.MakeSeed(), blocks: make([][8]uint64, nb), hashes: hashes, capacity: capacity}
}

func (f *idFilter) probe(k []byte, set bool) bool {
	h := maphash.Bytes(f.seed, k)
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
	return all
}

// absent reports whether k is certainly not in the id index. It is false (unknown)
// until the filter is built.
func (f *idFilter) absent(k []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.probe(k, false)
}

// add records k; full is true when the filter holds more keys than it was sized for.
func (f *idFilter) add(k []byte) (full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probe(k, true)
	f.n++
	return f.n > f.capacity
}

// buildFilter builds the ledger-wide filter of db for capacity ids: the ids of p's runs
// and its pending ids.
func buildFilter(db *badger.DB, p *postings, capacity int) (*idFilter, error) {
	f := newIDFilter(capacity)
	err := db.View(func(txn *badger.Txn) error {
		for _, r := range p.runs {
			if err := r.eachID(txn, func(k []byte) { f.add(k) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: build id filter: %w", err)
	}
	p.eachPendingID(func(k string, _ uint64) { f.add([]byte(k)) })
	return f, nil
}
