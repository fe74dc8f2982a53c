//go:build linux

package mapadvise

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

const supported = true

// mapsPath is the file pass reads.
const mapsPath = "/proc/self/maps"

var pageSize = uintptr(os.Getpagesize())

// region is the address range of one file's mapping, which may span several lines of
// /proc/self/maps once parts of it have different advice.
type region struct {
	lo, hi uintptr
	path   string
}

// pass advises every writable shared mapping of a log file directly in a.dir: the part
// of the file beyond what has been written MADV_RANDOM (so a write fault reads only its
// own page), the part written back to MADV_NORMAL as the writer moves on (so reading it
// back, say after a restart with the pages no longer cached, gets readahead again).
// Mappings that are gone are forgotten. It returns how many mappings it advised for
// the first time.
func (a *advisor) pass() (int, error) {
	data, err := a.readMaps()
	if err != nil {
		return 0, err
	}
	regions := map[mapping]*region{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		v, ok := parseLine(sc.Bytes(), a.dir)
		if !ok || v.offset > v.start {
			continue
		}
		key := mapping{start: uintptr(v.start - v.offset), inode: v.inode}
		if r := regions[key]; r != nil {
			r.lo, r.hi = min(r.lo, uintptr(v.start)), max(r.hi, uintptr(v.end))
		} else {
			regions[key] = &region{lo: uintptr(v.start), hi: uintptr(v.end), path: v.path}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("mapadvise: parse %s: %w", mapsPath, err)
	}
	seen := make(map[mapping]uintptr, len(regions))
	n := 0
	for key, r := range regions {
		// Badger writes its logs from the start, so the file's allocated blocks are
		// the part written (ext4 counts delayed allocations in them too).
		var st syscall.Stat_t
		if err := syscall.Stat(r.path, &st); err != nil {
			continue // removed since the maps were read
		}
		written := min(max(key.start+uintptr(st.Blocks)*512/pageSize*pageSize, r.lo), r.hi)
		prev, known := a.seen[key]
		var err error
		switch {
		case !known:
			err = advise(written, r.hi-written, unix.MADV_RANDOM)
			n++
		case written > prev:
			err = advise(prev, written-prev, unix.MADV_NORMAL)
		default:
			written = prev
		}
		if err == errGone {
			continue
		}
		if err != nil {
			return n, err
		}
		seen[key] = written
	}
	a.seen = seen
	return n, nil
}

// readMaps reads /proc/self/maps into a.buf, which it keeps for the next pass. It uses
// plain system calls: os.ReadFile's growing buffer and poller registration made a pass
// cost about a millisecond in a server process.
func (a *advisor) readMaps() ([]byte, error) {
	fd, err := unix.Open(mapsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mapadvise: open %s: %w", mapsPath, err)
	}
	defer unix.Close(fd)
	if a.buf == nil {
		a.buf = make([]byte, 64<<10)
	}
	n := 0
	for {
		if n == len(a.buf) {
			a.buf = append(a.buf, make([]byte, len(a.buf))...)
		}
		m, err := unix.Read(fd, a.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("mapadvise: read %s: %w", mapsPath, err)
		}
		if m == 0 {
			return a.buf[:n], nil
		}
		n += m
	}
}

var errGone = fmt.Errorf("mapadvise: mapping gone")

// advise calls madvise on [addr, addr+length).
func advise(addr, length uintptr, advice int) error {
	if length == 0 {
		return nil
	}
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice))
	switch errno {
	case 0:
		return nil
	case unix.ENOMEM: // unmapped since the maps were read
		return errGone
	}
	return fmt.Errorf("mapadvise: madvise %#x+%d: %w", addr, length, errno)
}

// vma is one line of /proc/self/maps.
type vma struct {
	start, end, offset, inode uint64
	path                      string
}

// parseLine parses one line of /proc/self/maps ("start-end perms offset dev inode
// path") and reports whether it is a writable shared mapping of a log file in dir.
func parseLine(line []byte, dir string) (v vma, ok bool) {
	// Five fields, then the path (which may hold spaces) after their padding.
	var f [5][]byte
	rest := line
	for i := range f {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			return v, false
		}
		f[i], rest = rest[:end], rest[end:]
	}
	v.path = string(bytes.TrimLeft(rest, " "))
	perms := f[1]
	if len(perms) < 4 || perms[1] != 'w' || perms[3] != 's' || !isLog(v.path) || filepath.Dir(v.path) != dir {
		return v, false
	}
	lo, hi, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return v, false
	}
	var errs [4]error
	v.start, errs[0] = strconv.ParseUint(string(lo), 16, 64)
	v.end, errs[1] = strconv.ParseUint(string(hi), 16, 64)
	v.offset, errs[2] = strconv.ParseUint(string(f[2]), 16, 64)
	v.inode, errs[3] = strconv.ParseUint(string(f[4]), 10, 64)
	for _, err := range errs {
		if err != nil {
			return v, false
		}
	}
	if v.end <= v.start {
		return v, false
	}
	return v, true
}
