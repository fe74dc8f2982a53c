// Package mapadvise turns off read-around for the files Badger writes through shared
// memory maps: its value logs (.vlog) and memtable logs (.mem).
//
// Badger appends to those files by copying into a writable mapping of a sparse file.
// Each write fault on a page not yet in the page cache first "reads" it, and the
// kernel's mmap read-around then reads the whole readahead window around it
// (read_ahead_kb: 8 MiB on the benchmark machine): for a hole that means allocating and
// zeroing megabytes of pages ahead of the writer. Where the kernel reclaims cold pages
// proactively (DAMON pageout, as on the benchmark's virtual machines), those
// zeroed-but-untouched pages are reclaimed before the writer reaches them and zeroed
// again on the next fault. After about 450,000 events the cluster benchmark spent a
// fifth of all CPU in that memset, and every process slowed by 15–25%
// (docs/performance.md). MADV_RANDOM on the part of a mapping not yet written makes a
// write fault read only its page; the part written is set back to MADV_NORMAL as the
// writer moves on, since reading it back cold page by page would be ~40 times slower
// (an agent draining a backlog after a reboot, a snapshot).
//
// Badger does not expose its mappings, so Watch finds them in /proc/self/maps by path
// and advises each new one (Badger maps a new file at each value-log rotation and each
// memtable). The advice changes only readahead, never what is read or written, but it
// splits a mapping in two (written, not yet written), and Linux refuses to grow a
// mapping that spans more than one area (mremap: EFAULT, "bad address"). Badger grows
// a value log's mapping only when one commit carries more than the mapping holds, so
// callers keep commits of large values bounded (the ledger's Restore flushes its write
// batch every 32 MiB; TestRestoreLargeValues in controlplane/ledger).
package mapadvise

import (
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// Every is how often Watch looks for new mappings.
const Every = 200 * time.Millisecond

// isLog reports whether path is a file Badger writes through a memory map.
func isLog(path string) bool {
	return strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".mem")
}

// Watch advises the mappings of Badger's log files in dir now and then every Every
// until stop is closed; it returns when it has made its first pass. The channel it
// returns is closed once it has stopped: wait for it before closing the database, so
// that no pass advises an address Badger has unmapped and something else mapped. Errors
// are logged once (the advice is an optimization: without it everything works, only
// slower).
func Watch(dir string, stop <-chan struct{}, log *slog.Logger) (stopped <-chan struct{}) {
	abs, err := filepath.Abs(dir)
	if err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
	}
	a := &advisor{dir: abs, seen: map[mapping]uintptr{}}
	warned := false
	pass := func() {
		if _, err := a.pass(); err != nil && !warned {
			warned = true
			log.Warn("cannot advise the kernel against readahead on Badger's log files; writes may cost more CPU", "dir", abs, "err", err)
		}
	}
	pass()
	done := make(chan struct{})
	if !supported {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t := time.NewTicker(Every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				pass()
			}
		}
	}()
	return done
}

// mapping identifies one mapping of a file: the address of the file's offset 0 in it and
// the file's inode (an address is reused when a file is unmapped and another mapped).
type mapping struct {
	start uintptr
	inode uint64
}

type advisor struct {
	dir  string
	seen map[mapping]uintptr // advised mappings: where their normal part ends
	buf  []byte              // the last read of the maps file
}
