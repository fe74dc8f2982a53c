package outbox

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"
)

// encodeVlogEntry encodes an entry as Badger writes it to a value-log file.
func encodeVlogEntry(meta byte, key []byte, version uint64, value []byte) []byte {
	var b []byte
	b = append(b, meta, 0)
	b = binary.AppendUvarint(b, uint64(len(key)+vlogVersionLen))
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = binary.AppendUvarint(b, 0)
	b = append(b, key...)
	b = binary.BigEndian.AppendUint64(b, math.MaxUint64-version)
	b = append(b, value...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func TestScanValueLog(t *testing.T) {
	file := make([]byte, vlogFileHeader)
	e1 := encodeVlogEntry(0x40, chunkKey(3, 3, 6), 7, chunkValue([][]byte{[]byte("ab"), []byte("cd"), []byte("ef")}))
	e2 := encodeVlogEntry(0x40, []byte("p/src"), 8, bytes.Repeat([]byte("x"), 40))
	e3 := encodeVlogEntry(0x40, chunkKey(4, 1, 1), 9, chunkValue([][]byte{[]byte("g")}))
	file = append(append(append(file, e1...), e2...), e3...)
	file[vlogFileHeader+len(e1)+len(e2)-6] ^= 1 // corrupt e2's value
	file = append(file, make([]byte, 100)...)   // preallocated zeros
	var got []vlogEntry
	end, err := scanValueLog(file, func(e vlogEntry) bool { got = append(got, e); return true })
	if err != nil || end != vlogFileHeader+len(e1)+len(e2)+len(e3) {
		t.Fatalf("scan: end %d, %v", end, err)
	}
	if len(got) != 3 || got[0].Corrupt != nil || got[1].Corrupt == nil || got[2].Corrupt != nil {
		t.Fatalf("entries %+v", got)
	}
	if !bytes.Equal(got[0].Key, chunkKey(3, 3, 6)) || got[0].Version != 7 || got[2].Version != 9 || got[0].Offset != vlogFileHeader {
		t.Fatalf("entry 0 = %+v", got[0])
	}
	// Cut inside e3: the scan stops there with an error, after e1 and e2.
	got = got[:0]
	end, err = scanValueLog(file[:vlogFileHeader+len(e1)+len(e2)+5], func(e vlogEntry) bool { got = append(got, e); return true })
	if err == nil || end != vlogFileHeader+len(e1)+len(e2) || len(got) != 2 {
		t.Fatalf("cut scan: end %d, %v, %d entries", end, err, len(got))
	}
}

func FuzzScanValueLog(f *testing.F) {
	hdr := make([]byte, vlogFileHeader)
	f.Add(append(hdr[:len(hdr):len(hdr)], encodeVlogEntry(0x40, chunkKey(2, 2, 2), 5, chunkValue([][]byte{[]byte("a"), []byte("b")}))...))
	f.Add(append(hdr[:len(hdr):len(hdr)], 0x40, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		prev := -1
		end, _ := scanValueLog(data, func(e vlogEntry) bool {
			if e.Offset <= prev || e.Offset < vlogFileHeader || e.Offset >= len(data) {
				t.Fatalf("entry at offset %d after %d in %d bytes", e.Offset, prev, len(data))
			}
			prev = e.Offset
			if len(e.Key)+vlogVersionLen+len(e.Value)+crc32.Size > len(data)-e.Offset {
				t.Fatalf("entry at %d: %d key and %d value bytes overrun the data", e.Offset, len(e.Key), len(e.Value))
			}
			return true
		})
		if end < 0 || end > len(data) {
			t.Fatalf("end %d of %d bytes", end, len(data))
		}
	})
}

func TestBadgerReadErrorLines(t *testing.T) {
	var r readErrors
	if !r.capture("Unable to read: Key: [99 0], Version : 10, meta: 66, userMeta: 0 Error: ErrEOF: End of file") ||
		!r.capture("Key: [99 0], Version : 10, meta: 66, userMeta: 0 valuePointer: {Fid:3 Len:5773 Offset:297647}") ||
		r.capture("some other error") {
		t.Fatal("capture took the wrong lines")
	}
	r.chunkLost(chunkMeta{first: 982, last: 1000})
	l := r.losses[3]
	if l == nil || l.values != 1 || l.first != 297647 || l.err != "ErrEOF: End of file" || l.seqLo != 982 || l.seqHi != 1000 {
		t.Fatalf("loss = %+v", l)
	}
}

func FuzzBadgerReadError(f *testing.F) {
	f.Add("Unable to read: Key: [99 0], Version : 10, meta: 66, userMeta: 0 Error: ErrEOF: End of file")
	f.Add("Key: [99 0], Version : 10, meta: 66, userMeta: 0 valuePointer: {Fid:3 Len:5773 Offset:297647}")
	f.Add("Key: valuePointer: {Fid:99999999999 Len:1 Offset:99999999999}")
	f.Fuzz(func(t *testing.T, line string) {
		var r readErrors
		r.capture(line)
		r.chunkLost(chunkMeta{first: 1, last: 2})
		for fid, l := range r.losses {
			if l.fid != fid || l.values == 0 || l.first > l.last {
				t.Fatalf("loss %+v", l)
			}
		}
		_ = r.problems(t.TempDir())
	})
}
