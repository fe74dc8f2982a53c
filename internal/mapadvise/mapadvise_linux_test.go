//go:build linux

package mapadvise

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/crossdock/crossdock/internal/testutil"
)

// vmFlags returns the VmFlags of every mapping of path in /proc/self/smaps ("rr" is
// MADV_RANDOM).
func vmFlags(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmFlags:") {
			if in {
				out = append(out, strings.Fields(strings.TrimPrefix(line, "VmFlags:")))
			}
			in = false
			continue
		}
		if f := strings.Fields(line); len(f) >= 6 && strings.Contains(f[0], "-") {
			in = strings.HasSuffix(line, " "+path)
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

	a := &advisor{dir: dir, seen: map[mapping]bool{}}
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
// its value log and memtable log, and the memtable log Badger maps after a flush.
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
	defer func() { close(stop); _ = db.Close() }()
	Watch(dir, stop, slog.New(slog.DiscardHandler))

	logs := func() (advised, all int) {
		for _, pat := range []string{"*.vlog", "*.mem"} {
			files, _ := filepath.Glob(filepath.Join(dir, pat))
			for _, f := range files {
				for _, fl := range vmFlags(t, f) {
					all++
					if random(fl) {
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
