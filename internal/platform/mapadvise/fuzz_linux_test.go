//go:build linux

package mapadvise

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseLine feeds parseLine arbitrary maps lines. It must not panic, must accept
// only writable shared mappings of .vlog and .mem files directly in the directory, and
// what it accepts must parse the same when written back in the kernel's format.
func FuzzParseLine(f *testing.F) {
	const dir = "/data/ledger/db-1"
	for _, s := range []string{
		"7f1c2a000000-7f1c6a000000 rw-s 00000000 fd:01 1234                       /data/ledger/db-1/000001.vlog",
		"7f1c2a000000-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/00003.mem",
		"7f1c2a000000-7f1c2c000000 r--s 00000000 fd:01 99 /data/ledger/db-1/00003.mem",
		"7f1c2a000000-7f1c2c000000 rw-p 00000000 fd:01 99 /data/ledger/db-1/00003.mem",
		"7f1c2a000000-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/000004.sst",
		"7f1c2a000000-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/sub/000004.vlog",
		"7f1c2a000000-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/000001.vlog (deleted)",
		"7f1c2a000000-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/a  b.vlog",
		"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon",
		"7ffd3c5f1000-7ffd3c612000 rw-p 00000000 00:00 0                          [stack]",
		"7f1c2c000000-7f1c2a000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/000001.vlog",
		"zz-7f1c2c000000 rw-s 00000000 fd:01 99 /data/ledger/db-1/000001.vlog",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		v, ok := parseLine([]byte(line), dir)
		if !ok {
			return
		}
		path := v.path
		f := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' }) // the kernel pads with spaces
		if len(f) < 6 || len(f[1]) < 4 || f[1][1] != 'w' || f[1][3] != 's' || !strings.HasSuffix(line, " "+path) ||
			filepath.Dir(path) != dir || !isLog(path) {
			t.Fatalf("accepted %q: not a writable shared mapping of a log file in %s", line, dir)
		}
		if v.end <= v.start {
			t.Fatalf("accepted %q with range %#x-%#x", line, v.start, v.end)
		}
		again := fmt.Sprintf("%x-%x %s %08x 00:00 %d %s", v.start, v.end, f[1], v.offset, v.inode, path)
		if v2, ok2 := parseLine([]byte(again), dir); !ok2 || v2 != v {
			t.Fatalf("%q parsed as %+v, written back as %q it parses as %+v (ok %t)", line, v, again, v2, ok2)
		}
	})
}
