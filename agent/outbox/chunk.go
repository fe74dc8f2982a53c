package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
)

// Records are stored in chunks: one Badger entry per run of consecutive seqs written by
// one Append (an Append's records are split into chunks of at most chunkMaxBytes). A
// Badger entry costs a memtable node, a write-ahead-log record and a tombstone when it
// is acknowledged, whatever its size, so one entry per event made Badger's per-entry
// work most of an Append's CPU; a chunk pays it once per 32 events of 256 bytes.
//
// Why 8 KiB and not a whole batch: Badger reclaims value-log space only for values
// whose keys a compaction has dropped, and compactions follow memtable flushes, which
// follow the number of keys written. The bigger the chunk, the more acknowledged bytes
// wait on disk for the next compaction: with 1 MiB chunks a flow of 3M events through
// the outbox reclaimed nothing at all; with 8 KiB chunks (and a compaction after every
// memtable flush, badger.go) disk use stays where one entry per record kept it
// (bench/outboxbench -phase flow, docs/performance.md).
//
// Key:   'c' | last seq (8 bytes, big endian) | records (4) | record bytes (4)
// Value: for each record, uvarint(len) then the record's bytes.
//
// Keying by the last seq makes "the chunk holding seq s" a forward seek to 'c'|s, and
// the key alone gives the chunk's seq range and byte count, so Ack learns the freed
// totals from keys; only a chunk that is partly acknowledged is read, to count the
// bytes of its records on either side of the mark. (Open reads every pending chunk
// anyway, to check that it decodes: damage.go.)
const (
	chunkPrefix = 'c'
	chunkKeyLen = 1 + 8 + 4 + 4
	// chunkMaxBytes bounds a chunk's value, unless a single record is larger.
	chunkMaxBytes = 8 << 10
	// chunkOverhead is the most bytes a chunk adds to a record of MaxRecordBytes: its
	// length prefix.
	chunkOverhead = binary.MaxVarintLen32
)

// chunkMeta is what a chunk's key says.
type chunkMeta struct {
	first, last uint64
	n           uint32 // records
	bytes       uint32 // sum of the records' lengths
}

func chunkKey(last uint64, n, bytes int) []byte {
	k := make([]byte, 0, chunkKeyLen)
	k = append(k, chunkPrefix)
	k = binary.BigEndian.AppendUint64(k, last)
	k = binary.BigEndian.AppendUint32(k, uint32(n))
	return binary.BigEndian.AppendUint32(k, uint32(bytes))
}

// chunkSeek is the smallest key of a chunk whose last seq is seq or more.
func chunkSeek(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{chunkPrefix}, seq)
}

func parseChunkKey(k []byte) (chunkMeta, error) {
	if len(k) != chunkKeyLen || k[0] != chunkPrefix {
		return chunkMeta{}, fmt.Errorf("malformed chunk key %x", k)
	}
	m := chunkMeta{
		last:  binary.BigEndian.Uint64(k[1:9]),
		n:     binary.BigEndian.Uint32(k[9:13]),
		bytes: binary.BigEndian.Uint32(k[13:17]),
	}
	if m.n == 0 || m.last < uint64(m.n) {
		return chunkMeta{}, fmt.Errorf("malformed chunk key %x: %d records ending at seq %d", k, m.n, m.last)
	}
	m.first = m.last - uint64(m.n) + 1
	return m, nil
}

var errChunkCorrupt = errors.New("corrupt chunk")

// walkChunk calls fn with each record of value v (of a chunk described by m), its seq
// and the offset of its bytes within v, in order, until fn returns false. It checks the
// value against the key: the record count, and the byte count when it walked them all.
func walkChunk(m chunkMeta, v []byte, fn func(seq uint64, off int, rec []byte) bool) error {
	off, total := 0, uint64(0)
	for i := uint64(0); i < uint64(m.n); i++ {
		l, k := binary.Uvarint(v[off:])
		if k <= 0 || l > math.MaxInt32 || k != protowire.SizeVarint(l) || uint64(len(v)-off-k) < l {
			return fmt.Errorf("%w: record %d of seqs %d..%d overruns the %d-byte value", errChunkCorrupt, i, m.first, m.last, len(v))
		}
		start := off + k
		off = start + int(l)
		total += l
		if !fn(m.first+i, start, v[start:off]) {
			return nil
		}
	}
	if off != len(v) || total != uint64(m.bytes) {
		return fmt.Errorf("%w: seqs %d..%d: %d records in %d of %d bytes, %d record bytes (key says %d)",
			errChunkCorrupt, m.first, m.last, m.n, off, len(v), total, m.bytes)
	}
	return nil
}

// chunkBytesIn returns the bytes of the records of a chunk with seq in (lo, hi].
func chunkBytesIn(m chunkMeta, v []byte, lo, hi uint64) (uint64, error) {
	var n uint64
	err := walkChunk(m, v, func(seq uint64, _ int, rec []byte) bool {
		if seq > hi {
			return false
		}
		if seq > lo {
			n += uint64(len(rec))
		}
		return true
	})
	return n, err
}

// Records is a batch of records laid out as the outbox stores them (each record after
// its uvarint length), so AppendRecords writes its chunks straight from the buffer,
// without copying the records. Build it with Add, or AddFunc to encode a record in
// place. The zero value is empty and ready to use.
type Records struct {
	buf    []byte
	starts []int // where each record's length prefix starts in buf
	offs   []int // where each record's bytes start
	bytes  uint64
}

// Len is the number of records.
func (r *Records) Len() int { return len(r.starts) }

// Record returns record i (valid until the next Add or AddFunc).
func (r *Records) Record(i int) []byte { return r.buf[r.offs[i]:r.end(i):r.end(i)] }

func (r *Records) end(i int) int {
	if i+1 < len(r.starts) {
		return r.starts[i+1]
	}
	return len(r.buf)
}

// Reset empties r and keeps its buffers for the next batch. The records of an
// AppendRecords call can be reset once it has returned: the outbox keeps no reference.
func (r *Records) Reset() {
	r.buf, r.starts, r.offs, r.bytes = r.buf[:0], r.starts[:0], r.offs[:0], 0
}

// Cap is the capacity of r's record buffer in bytes.
func (r *Records) Cap() int { return cap(r.buf) }

// Grow makes room for n more bytes of records without reallocating.
func (r *Records) Grow(n int) {
	if n > cap(r.buf)-len(r.buf) {
		r.buf = append(make([]byte, 0, len(r.buf)+n), r.buf...)
	}
}

// Add appends a copy of rec.
func (r *Records) Add(rec []byte) {
	r.AddFunc(func(b []byte) []byte { return append(b, rec...) })
}

// AddFunc appends a record that fn writes: fn appends the record's bytes to b and
// returns the result, changing nothing before len(b). It returns the record (valid
// until the next Add or AddFunc).
func (r *Records) AddFunc(fn func(b []byte) []byte) []byte {
	start := len(r.buf)
	r.buf = append(r.buf, 0, 0) // room for a length below 16384
	r.buf = fn(r.buf)
	n := len(r.buf) - start - 2
	switch k := protowire.SizeVarint(uint64(n)); {
	case k == 1:
		copy(r.buf[start+1:], r.buf[start+2:])
		r.buf = r.buf[:len(r.buf)-1]
	case k > 2:
		r.buf = append(r.buf, make([]byte, k-2)...)
		copy(r.buf[start+k:], r.buf[start+2:start+2+n])
	}
	k := binary.PutUvarint(r.buf[start:], uint64(n))
	r.starts, r.offs = append(r.starts, start), append(r.offs, start+k)
	r.bytes += uint64(n)
	return r.buf[start+k : start+k+n : start+k+n]
}

// split returns the end of the chunk that starts at record start: records are added
// while the chunk's value stays within chunkMaxBytes, and at least one is.
func (r *Records) split(start int) (end, bytes int) {
	end = start + 1
	for end < len(r.starts) && r.end(end)-r.starts[start] <= chunkMaxBytes {
		end++
	}
	for i := start; i < end; i++ {
		bytes += r.end(i) - r.offs[i]
	}
	return end, bytes
}

// value is the chunk value of records start..end-1.
func (r *Records) value(start, end int) []byte {
	return r.buf[r.starts[start]:r.end(end-1)]
}

// setChunks sets the chunks of rs, whose records have the seqs first, first+1, ...
func setChunks(txn *badger.Txn, rs *Records, first uint64) error {
	for start, seq := 0, first; start < rs.Len(); {
		end, bytes := rs.split(start)
		last := seq + uint64(end-start) - 1
		if err := txn.Set(chunkKey(last, end-start, bytes), rs.value(start, end)); err != nil {
			return err
		}
		start, seq = end, last+1
	}
	return nil
}

// eachChunk calls fn with each chunk whose last seq is from or more, in seq order, until
// fn says to stop or fails.
func eachChunk(txn *badger.Txn, from uint64, fn func(m chunkMeta, item *badger.Item) (more bool, err error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{chunkPrefix}})
	defer it.Close()
	for it.Seek(chunkSeek(from)); it.Valid(); it.Next() {
		m, err := parseChunkKey(it.Item().Key())
		if err != nil {
			return err
		}
		more, err := fn(m, it.Item())
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// bytesIn returns the bytes of the records of chunk m (stored in item) with seq in
// (lo, hi]; it reads the chunk's value only when the range cuts the chunk.
func bytesIn(item *badger.Item, m chunkMeta, lo, hi uint64) (uint64, error) {
	if lo < m.first && hi >= m.last {
		return uint64(m.bytes), nil
	}
	var n uint64
	err := item.Value(func(v []byte) error {
		var err error
		n, err = chunkBytesIn(m, v, lo, hi)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("chunk of seqs %d..%d: %w", m.first, m.last, err)
	}
	return n, nil
}
