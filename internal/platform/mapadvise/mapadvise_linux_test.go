//go:build linux

package mapadvise

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// vmFlags returns the VmFlags of every mapping of path in /proc/self/smaps ("rr" is
// MADV_RANDOM), in address order.
func vmFlags(t *testing.T, path string) [][]string {
	t.Helper()
	var out [][]string
	for _, v := range vmas(t, path) {
		out = append(out, v.flags)
	}
	return out
}

type smapsVMA struct {
	size  uint64
	flags []string
}

// vmas returns the size and VmFlags of every mapping of path in /proc/self/smaps.
func vmas(t *testing.T, path string) []smapsVMA {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out []smapsVMA
	var cur *smapsVMA
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmFlags:") {
			if cur != nil {
				cur.flags = strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
				out = append(out, *cur)
			}
			cur = nil
			continue
		}
		if f := strings.Fields(line); len(f) >= 6 && strings.Contains(f[0], "-") && strings.HasSuffix(line, " "+path) {
			lo, hi, _ := strings.Cut(f[0], "-")
			a, _ := strconv.ParseUint(lo, 16, 64)
			b, _ := strconv.ParseUint(hi, 16, 64)
			cur = &smapsVMA{size: b - a}
		}
	}
	return out
}

func random(flags []string) bool {
	for _, f := range flags {
		if f == "rr" {
			return true
		}
	}
	return false
}

// mapFile creates path with size bytes and maps it; shared and writable unless ro.
func mapFile(t *testing.T, path string, ro bool) []byte {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 1 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	prot, flags := syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED
	if ro {
		prot, flags = syscall.PROT_READ, syscall.MAP_PRIVATE
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, size, prot, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Munmap(b) })
	return b
}

// TestAdvisesWrittenLogMappings maps files of several kinds and checks that a pass
// advises exactly the writable shared mappings of .vlog and .mem files directly in the
// directory, once each, and forgets mappings that are gone.
func TestAdvisesWrittenLogMappings(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vlog, mem := filepath.Join(dir, "000001.vlog"), filepath.Join(dir, "00002.mem")
	sst := filepath.Join(dir, "000003.sst")
	nested := filepath.Join(dir, "sub", "000004.vlog")
	spaced := filepath.Join(dir, "with  two spaces.vlog")
	other := filepath.Join(t.TempDir(), "000005.vlog")
	ro := filepath.Join(dir, "000006.vlog")
	for _, p := range []string{vlog, mem, sst, nested, other} {
		mapFile(t, p, false)
	}
	spacedMap := mapFile(t, spaced, false)
	mapFile(t, ro, true)

	a := &advisor{dir: dir, seen: map[mapping]uintptr{}}
	n, err := a.pass()
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("first pass advised %d mappings, want 3 (.vlog, .mem, the spaced .vlog)", n)
	}
	for path, want := range map[string]bool{vlog: true, mem: true, spaced: true, sst: false, nested: false, other: false, ro: false} {
		fl := vmFlags(t, path)
		if len(fl) != 1 {
			t.Fatalf("%s: %d mappings in smaps, want 1", path, len(fl))
		}
		if random(fl[0]) != want {
			t.Errorf("%s: MADV_RANDOM %t, want %t (VmFlags %v)", filepath.Base(path), !want, want, fl[0])
		}
	}
	if n, err := a.pass(); err != nil || n != 0 {
		t.Errorf("second pass advised %d (err %v), want 0: mappings are advised once", n, err)
	}
	if err := syscall.Munmap(spacedMap); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pass(); err != nil {
		t.Fatal(err)
	}
	if len(a.seen) != 2 {
		t.Errorf("advisor remembers %d mappings after one was unmapped, want 2", len(a.seen))
	}
}

// TestWatchAdvisesBadger opens a real Badger database and checks that Watch advises
// the unwritten part of its value log and memtable log, and of the memtable logs Badger
// maps after flushes.
func TestWatchAdvisesBadger(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithValueThreshold(64).WithMemTableSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	watched := Watch(dir, stop, slog.New(slog.DiscardHandler))
	defer func() {
		close(stop)
		<-watched
		_ = db.Close()
	}()

	logs := func() (advised, all int) {
		for _, pat := range []string{"*.vlog", "*.mem"} {
			files, _ := filepath.Glob(filepath.Join(dir, pat))
			for _, f := range files {
				// The mapping's tail, beyond what Badger has written, is what must
				// be MADV_RANDOM.
				if fl := vmFlags(t, f); len(fl) > 0 {
					all++
					if random(fl[len(fl)-1]) {
						advised++
					}
				}
			}
		}
		return advised, all
	}
	if advised, all := logs(); all < 2 || advised != all {
		t.Fatalf("after Watch's first pass %d of %d log mappings advised; want all, at least 2", advised, all)
	}
	// Fill memtables so Badger flushes and maps new .mem files; the watcher advises them.
	val := bytes.Repeat([]byte("v"), 200)
	for i := range 20000 {
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(fmt.Sprintf("k%08d", i)), val) }); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "new log mappings advised", func() bool {
		advised, all := logs()
		return all >= 2 && advised == all
	})
}

// TestWrittenPartKeepsReadahead writes through a mapping as Badger does (from the start)
// and checks that the part written is set back to normal readahead at each pass while
// the rest stays MADV_RANDOM.
func TestWrittenPartKeepsReadahead(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "000001.vlog")
	b := mapFile(t, path, false) // 1 MiB
	a := &advisor{dir: dir, seen: map[mapping]uintptr{}}
	check := func(when string, wantNormal uint64) {
		t.Helper()
		if _, err := a.pass(); err != nil {
			t.Fatal(err)
		}
		var normal, rnd uint64
		for _, v := range vmas(t, path) {
			if random(v.flags) {
				rnd += v.size
			} else {
				normal += v.size
			}
		}
		if normal != wantNormal || normal+rnd != uint64(len(b)) {
			t.Fatalf("%s: %d bytes with normal readahead and %d MADV_RANDOM; want %d and %d", when, normal, rnd, wantNormal, uint64(len(b))-wantNormal)
		}
	}
	check("nothing written", 0)
	for i := range 256 << 10 {
		b[i] = 1
	}
	check("256 KiB written", 256<<10)
	for i := range 768 << 10 {
		b[i] = 2
	}
	check("768 KiB written", 768<<10)
	check("nothing more written", 768<<10)
}

// BenchmarkPass is one pass over this process's mappings (a server's has a few hundred).
func BenchmarkPass(b *testing.B) {
	a := &advisor{dir: b.TempDir(), seen: map[mapping]uintptr{}}
	for b.Loop() {
		if _, err := a.pass(); err != nil {
			b.Fatal(err)
		}
	}
}
