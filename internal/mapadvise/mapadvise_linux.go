//go:build linux

package mapadvise

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

const supported = true

// mapsPath is the file pass reads.
const mapsPath = "/proc/self/maps"

// pass advises every writable shared mapping of a log file directly in a.dir that it has
// not advised yet, and forgets mappings that are gone. It returns how many it advised.
func (a *advisor) pass() (int, error) {
	data, err := os.ReadFile(mapsPath)
	if err != nil {
		return 0, fmt.Errorf("mapadvise: read %s: %w", mapsPath, err)
	}
	live := make(map[mapping]bool, len(a.seen))
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		m, length, _, ok := parseLine(sc.Bytes(), a.dir)
		if !ok {
			continue
		}
		live[m] = true
		if a.seen[m] {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, length, unix.MADV_RANDOM)
		switch errno {
		case 0:
		case unix.ENOMEM: // unmapped since the maps were read: nothing to advise
			delete(live, m)
			continue
		default:
			return n, fmt.Errorf("mapadvise: madvise %#x+%d: %w", m.start, length, errno)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("mapadvise: parse %s: %w", mapsPath, err)
	}
	a.seen = live
	return n, nil
}

// parseLine parses one line of /proc/self/maps ("start-end perms offset dev inode
// path") and reports whether it is a writable shared mapping of a log file in dir.
func parseLine(line []byte, dir string) (m mapping, length uintptr, path string, ok bool) {
	// Five fields, then the path (which may hold spaces) after their padding.
	var f [5][]byte
	rest := line
	for i := range f {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			return m, 0, "", false
		}
		f[i], rest = rest[:end], rest[end:]
	}
	path = string(bytes.TrimLeft(rest, " "))
	perms := f[1]
	if len(perms) < 4 || perms[1] != 'w' || perms[3] != 's' || !written(path) || filepath.Dir(path) != dir {
		return m, 0, "", false
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return m, 0, "", false
	}
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	inode, err3 := strconv.ParseUint(string(f[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || end <= start {
		return m, 0, "", false
	}
	return mapping{start: uintptr(start), inode: inode}, uintptr(end - start), path, true
}
