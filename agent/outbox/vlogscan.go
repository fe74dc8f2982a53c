package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/ristretto/v2/z"
)

// Repair reads Badger's value-log files directly when Badger cannot open the outbox
// (a damaged table file): every chunk's key and value are in the value log, since
// records are above the value threshold (badger.go). A value-log file (Badger v4,
// unencrypted) is a 20-byte header (key id, 0 for no encryption, and an IV) followed
// by entries:
//
//	meta (1) | user meta (1) | uvarint key length | uvarint value length | uvarint expiry |
//	key (the user key, then 8 bytes of MaxUint64 - version, big endian) | value |
//	CRC-32C of all the above (4, big endian)
//
// A file ends at a zeroed entry header (Badger preallocates) or at its end.
const (
	vlogFileHeader = 20
	vlogBitDelete  = 1 << 0 // badger's bitDelete
	vlogVersionLen = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errVlogCorrupt reports an entry that does not check; scanning stops there.
var errVlogCorrupt = errors.New("value log entry does not check")

// vlogEntry is an entry of a value-log file. Key and Value point into the file's data.
type vlogEntry struct {
	Key     []byte // without the version
	Version uint64
	Meta    byte
	Value   []byte
	Offset  int
	// Corrupt is set when the entry's header reads but its checksum fails: the scan
	// goes on after it, Key and Value may be wrong.
	Corrupt error
}

// scanValueLog calls fn with each entry of a value-log file's data, in order, until fn
// returns false, the entries end (end is then the offset after the last entry), or an
// entry cannot be delimited (its header is malformed or it overruns the file): then it
// returns its offset as end and an error wrapping errVlogCorrupt. An entry that is
// delimited but fails its checksum is passed to fn with Corrupt set.
func scanValueLog(data []byte, fn func(e vlogEntry) bool) (end int, err error) {
	if len(data) < vlogFileHeader {
		return 0, fmt.Errorf("%w: the file has %d bytes, shorter than its %d-byte header", errVlogCorrupt, len(data), vlogFileHeader)
	}
	if binary.BigEndian.Uint64(data[:8]) != 0 {
		return 0, fmt.Errorf("%w: the file is encrypted (key id %d)", errVlogCorrupt, binary.BigEndian.Uint64(data[:8]))
	}
	off := vlogFileHeader
	for off < len(data) {
		e, n, err := decodeVlogEntry(data[off:])
		if err != nil {
			return off, fmt.Errorf("%w at offset %d: %w", errVlogCorrupt, off, err)
		}
		if n == 0 {
			return off, nil
		}
		e.Offset = off
		if !fn(e) {
			return off + n, nil
		}
		off += n
	}
	return off, nil
}

// decodeVlogEntry decodes the entry at the start of b and returns its length, or 0 at a
// zeroed header (the end of the written part).
func decodeVlogEntry(b []byte) (vlogEntry, int, error) {
	if len(b) < 2 {
		return vlogEntry{}, 0, fmt.Errorf("%d bytes left, too few for an entry header", len(b))
	}
	meta := b[0]
	off := 2
	var fields [3]uint64 // key length, value length, expiry
	for i := range fields {
		v, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return vlogEntry{}, 0, errors.New("entry header cut short or malformed")
		}
		fields[i], off = v, off+k
	}
	klen, vlen := fields[0], fields[1]
	if klen == 0 && vlen == 0 && meta == 0 && b[1] == 0 {
		return vlogEntry{}, 0, nil
	}
	if klen < vlogVersionLen || klen > math.MaxUint32 || vlen > math.MaxUint32 {
		return vlogEntry{}, 0, fmt.Errorf("entry header says key %d bytes, value %d bytes", klen, vlen)
	}
	if uint64(len(b)-off) < klen+vlen+crc32.Size {
		return vlogEntry{}, 0, fmt.Errorf("entry of %d key and %d value bytes overruns the file (%d bytes left)", klen, vlen, len(b)-off)
	}
	body := off + int(klen) + int(vlen)
	key := b[off : off+int(klen)]
	userKey := key[:len(key)-vlogVersionLen]
	e := vlogEntry{
		Key:     userKey[:len(userKey):len(userKey)],
		Version: math.MaxUint64 - binary.BigEndian.Uint64(key[len(userKey):]),
		Meta:    meta,
		Value:   b[off+int(klen) : body : body],
	}
	if want, got := binary.BigEndian.Uint32(b[body:]), crc32.Checksum(b[:body], castagnoli); want != got {
		e.Corrupt = fmt.Errorf("%w: checksum %08x, the entry says %08x", errVlogCorrupt, got, want)
	}
	return e, body + crc32.Size, nil
}

// checkNewestValueLog finds what Badger's open would do to the newest value-log file
// of dir: it cuts the file at the first entry that does not check, which is right for
// a write torn by a crash but destroys the intact entries that follow a corrupted one.
// It returns a problem when intact entries follow a corrupt one; "" otherwise.
func checkNewestValueLog(dir string) string {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if len(paths) == 0 {
		return ""
	}
	slices.SortFunc(paths, func(a, b string) int { return vlogFid(a) - vlogFid(b) })
	path := paths[len(paths)-1]
	if fi, err := os.Stat(path); err == nil && fi.Size() < vlogFileHeader {
		return "" // nothing written yet (or cut to nothing): the records' check tells
	}
	// Mapped, not read: the file may be Badger's preallocated 128 MiB.
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Sprintf("%s: %v", filepath.Base(path), err)
	}
	defer mf.Close(-1)
	data := mf.Data
	bad, intactAfter := -1, 0
	var badErr error
	_, err = scanValueLog(data, func(e vlogEntry) bool {
		switch {
		case e.Corrupt != nil && bad < 0:
			bad, badErr = e.Offset, e.Corrupt
		case e.Corrupt == nil && bad >= 0:
			intactAfter++
		}
		return true
	})
	if bad < 0 && err != nil && len(data) >= vlogFileHeader && binary.BigEndian.Uint64(data[:8]) != 0 {
		return fmt.Sprintf("%s: %v", filepath.Base(path), err)
	}
	if bad >= 0 && intactAfter > 0 {
		return fmt.Sprintf("%s (%d bytes): the entry at offset %d does not check (%v) and %d intact entries follow it",
			filepath.Base(path), len(data), bad, badErr, intactAfter)
	}
	return ""
}
