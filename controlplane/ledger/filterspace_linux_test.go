package ledger

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// mappedFilters counts this process's mappings of the id filter files of the ledger
// in dir (other tests' ledgers map theirs at the same time).
func mappedFilters(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // the kernel shows the resolved path
	}
	return strings.Count(string(b), filepath.Join(dir, filterDirName)+"/idfilter-")
}

// dirsBesideFilters checks that every run's directory of l is in its filter's mapping,
// right after the filter's blocks (filterSpace.runFilter), not on the heap.
func dirsBesideFilters(t *testing.T, l *Ledger) {
	t.Helper()
	runs := l.cur.post.runs
	for _, r := range runs {
		if r.dir.n == 0 {
			t.Fatalf("run %d has an empty directory", r.last)
		}
		end := uintptr(unsafe.Pointer(&r.filter.blocks[0])) + uintptr(len(r.filter.blocks))*64
		if at := uintptr(unsafe.Pointer(&r.dir.b[0])); at != end {
			t.Fatalf("run %d: directory at %#x, not right after its filter's blocks (%#x)", r.last, at, end)
		}
	}
	runtime.KeepAlive(runs)
}

// TestFiltersMappedOnDisk: a ledger on disk keeps its id filters (the ledger-wide one
// and each run's) in mapped files, not on the heap, and unmaps them once the ledger is
// closed and they are unreachable; an in-memory ledger maps none.
func TestFiltersMappedOnDisk(t *testing.T) {
	if mem := newLedger(t, false); mem.space.dir != "" {
		t.Fatalf("an in-memory ledger maps its filters in %s", mem.space.dir)
	}

	dir := t.TempDir()
	l, err := Open(Options{Dir: dir}) // not newLedger: its cleanup would keep l reachable
	if err != nil {
		t.Fatal(err)
	}
	if n := mappedFilters(t, dir); n != 1 {
		t.Fatalf("%d mapped filter files after Open, want 1 (the ledger-wide filter)", n)
	}
	k := newKeyLog(t)
	k.add(flushSeqs*3+10, 500, skuKeys(100), l)
	runs := countRuns(t, l)
	if runs < 2 {
		t.Fatalf("%d runs, want at least 2", runs)
	}
	if n := mappedFilters(t, dir); n != 1+runs {
		t.Fatalf("%d mapped filter files with %d runs, want %d", n, runs, 1+runs)
	}
	dirsBesideFilters(t, l)
	checkIDs(t, l, k)
	closeUnmapped(t, l, dir)

	// Opened again, the runs' filters share one mapping (runFilters) and still find
	// every id.
	if l, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if n := mappedFilters(t, dir); n != 2 {
		t.Fatalf("%d mapped filter files after reopening with %d runs, want 2 (the ledger-wide filter and one for the runs)", n, runs)
	}
	dirsBesideFilters(t, l)
	checkIDs(t, l, k)
	k.add(flushSeqs+10, 500, skuKeys(100), l) // a run flushed after Open gets its own
	if n := mappedFilters(t, dir); n != 3 {
		t.Fatalf("%d mapped filter files after a flush since reopening, want 3", n)
	}
	dirsBesideFilters(t, l)
	checkIDs(t, l, k)
	closeUnmapped(t, l, dir)
}

// closeUnmapped closes l (its only reference) and waits until the filter files of dir
// are unmapped.
func closeUnmapped(t *testing.T, l *Ledger, dir string) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = nil
	testutil.WaitFor(t, 10*time.Second, "filter files unmapped after Close", func() bool {
		runtime.GC() // the cleanups run after a collection finds the filters unreachable
		return mappedFilters(t, dir) == 0
	})
}
