package ledger

import (
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"
)

// filterSpace is where the id filters' blocks live. With a directory (a ledger on
// disk) a filter of at least mappedFilterMin bytes is a file in it mapped into memory
// (MAP_SHARED, unlinked at once), so its pages are the kernel's page cache, written
// back and evicted under memory pressure like Badger's own table files, instead of the
// process's anonymous memory: what the ledger keeps per id held (4 to 6 bytes, docs/
// operations.md) then no longer grows the heap or RssAnon with the dedup window, and a
// node's memory is set by its configuration (--memory-limit) rather than by how
// many events it holds. Without a directory (InMemory) or if mapping fails, blocks are
// on the heap. A mapped filter is unmapped by a cleanup once the filter is unreachable;
// readers keep the filter alive while they touch its blocks (runtime.KeepAlive).
type filterSpace struct {
	dir string // "" = heap
}

// mappedFilterMin is the smallest filter that gets a mapping. Run filters (about 20 to
// 40 KiB for a flush of 16k ids) are mapped too, since together they are a third of
// the bytes per id; the floor keeps tiny filters (tests, runs of a few ids) off the
// process's map count. At most one mapping per run (the runs a database holds when it
// is opened share mappings, runFilters): 18,000 runs (300 million ids in the dedup
// window) stay well under Linux's default vm.max_map_count of 65,530.
const mappedFilterMin = 16 << 10

// filterDirName is the directory under Options.Dir that holds the mapped filters. It
// holds only unlinked files while the ledger runs; Open empties it (a crash between
// create and unlink leaves at most one).
const filterDirName = "filters"

func newFilterSpace(ledgerDir string) (filterSpace, error) {
	if ledgerDir == "" {
		return filterSpace{}, nil
	}
	dir := filepath.Join(ledgerDir, filterDirName)
	if err := os.RemoveAll(dir); err != nil {
		return filterSpace{}, fmt.Errorf("ledger: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return filterSpace{}, fmt.Errorf("ledger: create %s: %w", dir, err)
	}
	return filterSpace{dir: dir}, nil
}

// idFilter returns the ledger-wide filter, sized for at least filterMinCapacity ids.
func (s filterSpace) idFilter(capacity int) *idFilter {
	f, _ := s.filter(max(capacity, filterMinCapacity), 16, 11, 0)
	return f
}

// runFilter returns the filter of a run of n ids, and extra bytes for the run's
// directory (runDir): in the filter's mapping when it has one, so that the directory
// too is page cache rather than heap, and stays mapped while the filter is reachable.
func (s filterSpace) runFilter(n, extra int) (*idFilter, []byte) {
	return s.filter(max(n, 1), runFilterBits, runFilterHashes, extra)
}

// A run's filter has 10 bits per id and 7 probes (about 1% false positives).
const runFilterBits, runFilterHashes = 10, 7

func (s filterSpace) filter(capacity, bitsPerID int, hashes uint32, extra int) (*idFilter, []byte) {
	nb := filterBlocks(capacity, bitsPerID)
	if s.dir == "" || nb*64 < mappedFilterMin {
		return newFilter(capacity, bitsPerID, hashes), make([]byte, extra)
	}
	mem, err := mapFilterFile(s.dir, nb*64+roundUp64(extra))
	if err != nil {
		// The heap still works; only where the memory is counted differs.
		return newFilter(capacity, bitsPerID, hashes), make([]byte, extra)
	}
	f := mappedFilter(mem[:nb*64], capacity, hashes)
	runtime.AddCleanup(f, unmapFilter, mem)
	return f, mem[nb*64 : nb*64+extra : nb*64+extra]
}

// roundUp64 rounds n up to a multiple of 64, so that what follows in a mapping starts
// on a cache line (filter blocks must be 8-aligned).
func roundUp64(n int) int { return (n + 63) &^ 63 }

// mappedFilter is a filter whose blocks are mem (a multiple of 64 bytes, 8-aligned).
func mappedFilter(mem []byte, capacity int, hashes uint32) *idFilter {
	return &idFilter{seed: maphash.MakeSeed(), blocks: unsafe.Slice((*[8]uint64)(unsafe.Pointer(&mem[0])), len(mem)/64), hashes: hashes, capacity: capacity}
}

// runFilters hands out the filters of the runs a database holds when it is opened
// (loadRuns) from shared mappings of runSlabBytes each, rather than a file and a
// mapping per run: thousands of runs (16 million ids held) took a second of creating
// files. Runs are read oldest first and retention drops them oldest first, so the runs
// of one mapping leave together; it is unmapped once none of its filters is reachable.
// Runs flushed later get a mapping each (filterSpace.runFilter).
type runFilters struct {
	space filterSpace
	slab  *filterSlab // the mapping being filled; nil before the first
}

// filterSlab is a mapping shared by the filters carved from it, which keep it
// reachable (idFilter.slab).
type filterSlab struct {
	mem  []byte
	used int
}

// runSlabBytes is the size of one runFilters mapping: about a hundred runs' filters.
// The part never handed out is never written, so it takes no memory.
const runSlabBytes = 4 << 20

// filter is filterSpace.runFilter from the shared mappings: the filter of a run of n
// ids, and extra bytes beside it for the run's directory.
func (c *runFilters) filter(n, extra int) (*idFilter, []byte) {
	capacity := max(n, 1)
	fsize := filterBlocks(capacity, runFilterBits) * 64
	size := fsize + roundUp64(extra)
	if c.space.dir == "" || fsize < mappedFilterMin || size > runSlabBytes {
		return c.space.runFilter(n, extra)
	}
	if c.slab == nil || len(c.slab.mem)-c.slab.used < size {
		mem, err := mapFilterFile(c.space.dir, runSlabBytes)
		if err != nil {
			return c.space.runFilter(n, extra)
		}
		c.slab = &filterSlab{mem: mem}
		runtime.AddCleanup(c.slab, unmapFilter, mem)
	}
	at := c.slab.used
	f := mappedFilter(c.slab.mem[at:at+fsize], capacity, runFilterHashes)
	f.slab = c.slab
	c.slab.used += size
	return f, c.slab.mem[at+fsize : at+fsize+extra : at+fsize+extra]
}
