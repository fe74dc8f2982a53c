package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// The id index (layout 4, DESIGN.md "Id index") is written in runs: at each flush of the
// key index lists (postings.go), the ids of the events since the previous flush are
// written as one run, sorted, in blocks of runBlockIDs, with a directory of each
// block's first id. Until then they are in memory (postings.ids). A run is never
// rewritten. Writing one record per id instead cost one Badger memtable insert per
// event on every replica, half of what the cluster did (docs/performance.md).
//
// Lookups go through the ledger-wide Bloom filter first (an id it rules out is new),
// then the pending ids, then each run from the newest, skipping runs whose own filter
// rules the id out. The filters and directories are in memory, built when the database
// is opened or restored.

var (
	prefixRun     = []byte("r/")  // + u64BE(run) + u32BE(block) -> run block
	prefixRunDir  = []byte("rd/") // + u64BE(run) -> run directory
	prefixRunTime = []byte("rt/") // + u64BE(run) -> u64BE unix nanos: commit time of the run's last event (layout 6)
)

func runTimeKey(run uint64) []byte { return cat(prefixRunTime, u64(run)) }

const (
	// runBlockIDs is how many ids a run block holds.
	runBlockIDs = 128
	// flushIDBytes flushes the pending ids when what they would write reaches it.
	flushIDBytes = 2 << 20
)

// idRun is the in-memory part of a run: its key, the first id key of each block, and a
// filter over its ids. Immutable once built.
type idRun struct {
	last   uint64
	dir    runDir // in the filter's mapping when it has one: read it with the run kept alive
	filter *idFilter
	n      int   // ids in the run
	at     int64 // unix nanos of the commit of its last event; 0 when unknown (written by layout 5)
}

// idCost is what id key k adds to the flush that writes it: charged as one write (which
// over-counts the blocks) with room for its bytes in a block and in the directory.
func idCost(k []byte) (entries, size int) { return 1, 2*len(k) + 24 }

func runBlockKey(run uint64, block uint32) []byte {
	return binary.BigEndian.AppendUint32(cat(prefixRun, u64(run)), block)
}

func runDirKey(run uint64) []byte { return cat(prefixRunDir, u64(run)) }

// runID is an id key and its seq.
type runID struct {
	key string
	seq uint64
}

// encodeRunBlock encodes ids (ascending by key): per id, uvarint length, the id key,
// uvarint seq.
func encodeRunBlock(ids []runID) []byte {
	n := 0
	for _, id := range ids {
		n += len(id.key) + 12
	}
	b := make([]byte, 0, n)
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(len(id.key)))
		b = append(b, id.key...)
		b = binary.AppendUvarint(b, id.seq)
	}
	return b
}

var errRunRecord = errors.New("ledger: malformed id run record")

// decodeRunBlock calls fn for each id key and seq of a block, in order, until fn
// returns false.
func decodeRunBlock(v []byte, fn func(k []byte, seq uint64) bool) error {
	for len(v) > 0 {
		l, n := binary.Uvarint(v)
		if n <= 0 || l > uint64(len(v)-n) {
			return errRunRecord
		}
		k := v[n : n+int(l)]
		v = v[n+int(l):]
		seq, m := binary.Uvarint(v)
		if m <= 0 {
			return errRunRecord
		}
		v = v[m:]
		if !fn(k, seq) {
			return nil
		}
	}
	return nil
}

// encodeRunDir encodes the first id key of each block.
func encodeRunDir(firsts []string) []byte {
	var b []byte
	for _, k := range firsts {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

// runDir is a run's directory in memory: the first id key of each of its n blocks, laid
// out for binary search in one byte slice, n+1 little-endian uint32 offsets and then
// the keys back to back. On a ledger on disk the slice is beside the run's filter in
// its mapping (filterSpace.runFilter), so like the filters it is page cache rather than
// heap and does not grow the heap with the ids held; it stays mapped while the filter
// is reachable, so a reader keeps the run alive (runtime.KeepAlive) until it is done
// with the bytes.
type runDir struct {
	b []byte
	n int
}

// runDirBytes is the size of the directory of keys.
func runDirBytes(keys []string) int {
	n := 4 * (len(keys) + 1)
	for _, k := range keys {
		n += len(k)
	}
	return n
}

// putRunDir lays keys (sorted) out in b, of runDirBytes(keys) bytes.
func putRunDir(b []byte, keys []string) runDir {
	base := 4 * (len(keys) + 1)
	at := 0
	for i, k := range keys {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(at))
		at += copy(b[base+at:], k)
	}
	binary.LittleEndian.PutUint32(b[4*len(keys):], uint32(at))
	return runDir{b: b, n: len(keys)}
}

// key is the first id key of block i.
func (d runDir) key(i int) []byte {
	base := 4 * (d.n + 1)
	return d.b[base+int(binary.LittleEndian.Uint32(d.b[4*i:])) : base+int(binary.LittleEndian.Uint32(d.b[4*i+4:]))]
}

// block is the block whose first id is the last one <= k: the only one that can hold
// k; -1 when k sorts before every block.
func (d runDir) block(k []byte) int {
	return sort.Search(d.n, func(i int) bool { return string(d.key(i)) > string(k) }) - 1
}

func decodeRunDir(v []byte) ([]string, error) {
	var out []string
	for len(v) > 0 {
		l, n := binary.Uvarint(v)
		if n <= 0 || l > uint64(len(v)-n) {
			return nil, errRunRecord
		}
		out = append(out, string(v[n:n+int(l)]))
		v = v[n+int(l):]
	}
	return out, nil
}

// writeRun writes the ids of pending (id key -> seq) as run last and returns its
// in-memory part. The writes were charged as the ids were added (idCost).
func writeRun(tx *applyTxn, space filterSpace, last uint64, pending []map[string]uint64) (*idRun, error) {
	n := 0
	for _, m := range pending {
		n += len(m)
	}
	ids := sortedIDs(pending, n)
	var firsts []string
	for b := 0; b*runBlockIDs < len(ids); b++ {
		blk := ids[b*runBlockIDs : min((b+1)*runBlockIDs, len(ids))]
		firsts = append(firsts, blk[0].key)
		if err := tx.put(runBlockKey(last, uint32(b)), encodeRunBlock(blk)); err != nil {
			return nil, err
		}
	}
	if err := tx.put(runDirKey(last), encodeRunDir(firsts)); err != nil {
		return nil, err
	}
	r := &idRun{last: last, n: len(ids)}
	var dir []byte
	r.filter, dir = space.runFilter(len(ids), runDirBytes(firsts))
	r.dir = putRunDir(dir, firsts)
	for _, id := range ids {
		r.filter.addString(id.key)
	}
	return r, nil
}

// sortedIDs returns the n ids of pending sorted by key.
//
// A flush sorts tens of thousands of ids, and comparing them as strings cost a tenth of
// a follower's CPU (docs/performance.md): ids share a prefix ("i/ev_") and then differ
// early. So the ids are ordered by the 8 bytes that follow their common prefix, with a
// radix sort of those as big-endian integers, and only ids that share those 8 bytes are
// compared whole. Keys shorter than that are padded with zeros, which orders a key
// before every longer key it is a prefix of, as string comparison does.
func sortedIDs(pending []map[string]uint64, n int) []runID {
	ids := make([]runID, 0, n)
	for _, m := range pending {
		for k, s := range m {
			ids = append(ids, runID{k, s})
		}
	}
	byKey := func(a, b runID) int { return strings.Compare(a.key, b.key) }
	if len(ids) < radixMinIDs || uint64(len(ids)) > math.MaxUint32 {
		slices.SortFunc(ids, byKey)
		return ids
	}
	lcp := len(ids[0].key)
	for _, id := range ids[1:] {
		lcp = min(lcp, commonPrefix(ids[0].key[:lcp], id.key))
	}
	order := make([]radixItem, len(ids))
	for i, id := range ids {
		order[i] = radixItem{prefix8(id.key[lcp:]), uint32(i)}
	}
	order = radixSort(order, make([]radixItem, len(ids)))
	out := make([]runID, len(ids))
	for i, it := range order {
		out[i] = ids[it.i]
	}
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && order[j].p == order[i].p {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(out[i:j], byKey)
		}
		i = j
	}
	return out
}

// radixMinIDs is the fewest ids sortedIDs radix-sorts; fewer are sorted by comparison.
const radixMinIDs = 256

// radixItem is an id's sort prefix and its index in the unsorted ids.
type radixItem struct {
	p uint64
	i uint32
}

// radixSort sorts a by p (least significant byte first, skipping bytes that every item
// shares), using tmp (as long as a) as scratch, and returns whichever holds the result.
func radixSort(a, tmp []radixItem) []radixItem {
	for shift := 0; shift < 64; shift += 8 {
		var count [256]int
		for _, it := range a {
			count[byte(it.p>>shift)]++
		}
		if count[byte(a[0].p>>shift)] == len(a) {
			continue
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, it := range a {
			d := byte(it.p >> shift)
			tmp[count[d]] = it
			count[d]++
		}
		a, tmp = tmp, a
	}
	return a
}

// prefix8 is the first 8 bytes of s as a big-endian integer, s padded with zeros.
func prefix8(s string) uint64 {
	if len(s) >= 8 {
		return binary.BigEndian.Uint64([]byte(s[:8]))
	}
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

// commonPrefix is the length of the common prefix of a and b.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// lookupRuns looks id key k up in runs, newest first.
func lookupRuns(txn *badger.Txn, runs []*idRun, k []byte) (seq uint64, ok bool, err error) {
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if r.filter.absent(k) {
			continue
		}
		b := r.dir.block(k)
		runtime.KeepAlive(r) // r.dir is in r.filter's mapping
		if b < 0 {
			continue
		}
		v, found, err := getValue(txn, runBlockKey(r.last, uint32(b)))
		if err != nil {
			return 0, false, fmt.Errorf("ledger: read id run %d block %d: %w", r.last, b, err)
		}
		if !found {
			return 0, false, fmt.Errorf("ledger: id run %d has no block %d", r.last, b)
		}
		err = decodeRunBlock(v, func(id []byte, s uint64) bool {
			if string(id) == string(k) {
				seq, ok = s, true
			}
			return !ok && string(id) < string(k)
		})
		if err != nil {
			return 0, false, fmt.Errorf("ledger: id run %d block %d: %w", r.last, b, err)
		}
		if ok {
			return seq, true, nil
		}
	}
	return 0, false, nil
}

// loadRuns reads every run of the database: their in-memory parts (each with its
// filter), and adds each id key to all, the ledger-wide filter.
func loadRuns(txn *badger.Txn, space filterSpace, all *idFilter) ([]*idRun, error) {
	var (
		runs    []*idRun
		ids     [][]byte
		hs      []uint64
		filters = runFilters{space: space}
	)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixRunDir
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		key := it.Item().Key()
		if len(key) != len(prefixRunDir)+8 {
			return nil, fmt.Errorf("%w: directory key %q", errRunRecord, key)
		}
		r := &idRun{last: binary.BigEndian.Uint64(key[len(prefixRunDir):])}
		at, err := getU64(txn, runTimeKey(r.last))
		if err != nil {
			return nil, fmt.Errorf("ledger: id run %d time: %w", r.last, err)
		}
		r.at = int64(at)
		var firsts []string
		err = it.Item().Value(func(v []byte) error {
			var err error
			firsts, err = decodeRunDir(v)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("ledger: id run %d directory: %w", r.last, err)
		}
		r.dir.n = len(firsts) // eachID reads the blocks by number only
		ids = ids[:0]
		if err := r.eachID(txn, func(k []byte) { ids = append(ids, k) }); err != nil {
			return nil, err
		}
		var dir []byte
		r.filter, dir = filters.filter(len(ids), runDirBytes(firsts))
		r.dir, r.n = putRunDir(dir, firsts), len(ids)
		hs = r.filter.addKeys(ids, hs)
		hs = all.addKeys(ids, hs)
		runs = append(runs, r)
	}
	return runs, nil
}

// eachID reads run r's blocks and calls fn with every id key.
func (r *idRun) eachID(txn *badger.Txn, fn func(k []byte)) error {
	for b := range r.dir.n {
		v, found, err := getValue(txn, runBlockKey(r.last, uint32(b)))
		if err != nil || !found {
			return fmt.Errorf("ledger: id run %d block %d missing or unreadable: %v", r.last, b, err)
		}
		err = decodeRunBlock(v, func(k []byte, _ uint64) bool {
			fn(k)
			return true
		})
		if err != nil {
			return fmt.Errorf("ledger: id run %d block %d: %w", r.last, b, err)
		}
	}
	return nil
}
