package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// model is what the outbox should hold: every record appended, by seq, and the mark.
type model struct {
	recs  map[uint64][]byte
	last  uint64
	acked uint64
}

func (m *model) check(t *testing.T, o *Outbox, when string) {
	t.Helper()
	var events, size uint64
	for s := m.acked + 1; s <= m.last; s++ {
		events++
		size += uint64(len(m.recs[s]))
	}
	s := o.Stats()
	if s.LastSeq != m.last || s.AckedSeq != m.acked || s.PendingEvents != events || s.PendingBytes != size {
		t.Fatalf("%s: stats %+v, want last %d acked %d pending %d events / %d bytes", when, s, m.last, m.acked, events, size)
	}
	es := readAll(t, o, 0)
	if uint64(len(es)) != events {
		t.Fatalf("%s: read %d entries, want %d", when, len(es), events)
	}
	for i, e := range es {
		if want := m.acked + 1 + uint64(i); e.Seq != want || !bytes.Equal(e.Data, m.recs[want]) {
			t.Fatalf("%s: entry %d is seq %d (%d bytes), want seq %d (%d bytes)", when, i, e.Seq, len(e.Data), want, len(m.recs[want]))
		}
	}
}

// TestChunks appends batches that span several chunks (records of random sizes, some
// of them over half a chunk), reads them back from every kind of position with count
// and byte limits, acknowledges up to marks inside chunks and reopens in between; the
// outbox must always hold exactly the records after the mark, with exact totals.
func TestChunks(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 1<<30)
	defer func() { closeOK(t, o) }()
	r := rand.New(rand.NewPCG(7, 11))
	m := &model{recs: map[uint64][]byte{}}
	for round := range 12 {
		n := 1 + r.IntN(1500)
		batch := make([][]byte, n)
		for i := range batch {
			size := r.IntN(2048)
			if r.IntN(200) == 0 {
				size = chunkMaxBytes/2 + r.IntN(chunkMaxBytes) // alone in its chunk, or nearly
			}
			b := make([]byte, size)
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			batch[i] = b
		}
		first, last := mustAppend(t, o, batch)
		if first != m.last+1 || last != m.last+uint64(n) {
			t.Fatalf("round %d: append got %d..%d, want %d..%d", round, first, last, m.last+1, m.last+uint64(n))
		}
		for i, b := range batch {
			m.recs[first+uint64(i)] = b
		}
		m.last = last

		// Reads from random positions with random limits return a prefix of what
		// follows the position, within the limits.
		for range 20 {
			from := m.acked + 1 + uint64(r.IntN(int(m.last-m.acked)))
			maxCount, maxBytes := r.IntN(700), r.IntN(64<<10)
			es, err := o.Read(from, maxCount, maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				t.Fatalf("round %d: Read(%d, %d, %d) returned nothing", round, from, maxCount, maxBytes)
			}
			total := 0
			for i, e := range es {
				if e.Seq != from+uint64(i) || !bytes.Equal(e.Data, m.recs[e.Seq]) {
					t.Fatalf("round %d: Read(%d): entry %d is seq %d, wrong or with wrong data", round, from, i, e.Seq)
				}
				total += len(e.Data)
			}
			if maxCount > 0 && len(es) > maxCount {
				t.Fatalf("Read(%d, %d, %d) returned %d entries", from, maxCount, maxBytes, len(es))
			}
			if maxBytes > 0 && len(es) > 1 && total > maxBytes {
				t.Fatalf("Read(%d, %d, %d) returned %d bytes", from, maxCount, maxBytes, total)
			}
			next := es[len(es)-1].Seq + 1
			stoppedEarly := next <= m.last && (maxCount <= 0 || len(es) < maxCount) &&
				(maxBytes <= 0 || total+len(m.recs[next]) <= maxBytes)
			if stoppedEarly {
				t.Fatalf("Read(%d, %d, %d) stopped at %d with room for more", from, maxCount, maxBytes, next)
			}
			// ReadFunc passes the same entries.
			k := 0
			n, lastSeq, err := o.ReadFunc(from, maxCount, maxBytes, func(seq uint64, rec []byte) error {
				if k >= len(es) || seq != es[k].Seq || !bytes.Equal(rec, es[k].Data) {
					return fmt.Errorf("entry %d is seq %d, Read said %v", k, seq, es[min(k, len(es)-1)].Seq)
				}
				k++
				return nil
			})
			if err != nil || n != len(es) || lastSeq != es[len(es)-1].Seq {
				t.Fatalf("ReadFunc(%d, %d, %d) = %d entries up to %d, %v; Read gave %d", from, maxCount, maxBytes, n, lastSeq, err, len(es))
			}
			// The returned data is the caller's: writing it changes nothing stored.
			for _, e := range es {
				for j := range e.Data {
					e.Data[j] ^= 0xff
				}
			}
		}

		// Acknowledge up to a random seq, often inside a chunk, sometimes twice in
		// the same chunk.
		upTo := m.acked + uint64(r.IntN(int(m.last-m.acked)+1))
		for _, u := range []uint64{upTo - min(upTo-m.acked, uint64(r.IntN(3))), upTo} {
			if err := o.Ack(u); err != nil {
				t.Fatal(err)
			}
			m.acked = max(m.acked, u)
		}
		m.check(t, o, fmt.Sprintf("round %d after ack %d", round, m.acked))
		if round%3 == 2 {
			closeOK(t, o)
			o = open(t, dir, 1<<30)
			m.check(t, o, fmt.Sprintf("round %d after reopen", round))
		}
	}
	if err := o.Ack(m.last); err != nil {
		t.Fatal(err)
	}
	m.acked = m.last
	m.check(t, o, "all acknowledged")
	// Nothing is left in Badger but the mark (and no positions were written).
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); !bytes.Equal(k, ackedKey) {
				return fmt.Errorf("key %x left after everything was acknowledged", k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeFirstFormat writes records in the first outbox format (one entry per record)
// straight into the Badger database in dir, with the acknowledged mark at acked.
func writeFirstFormat(t *testing.T, dir string, acked uint64, recs map[uint64][]byte) {
	t.Helper()
	db, err := badger.Open((&Outbox{}).badgerOptions(dir, quiet))
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatch()
	for seq, r := range recs {
		k := binary.BigEndian.AppendUint64([]byte{entryPrefix}, seq)
		k = binary.BigEndian.AppendUint32(k, uint32(len(r)))
		if err := wb.Set(k, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Set(ackedKey, binary.BigEndian.AppendUint64(nil, acked)); err != nil {
		t.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestConvertsFirstFormat opens an outbox written one entry per record (an agent
// upgraded with events buffered): the records after the mark are all there, in
// order, with exact totals, survive a reopen, and acknowledging them leaves nothing.
func TestConvertsFirstFormat(t *testing.T) {
	dir := t.TempDir()
	m := &model{recs: map[uint64][]byte{}, acked: 1000, last: 1000 + 5000}
	stored := map[uint64][]byte{}
	r := rand.New(rand.NewPCG(3, 5))
	for s := m.acked + 1; s <= m.last; s++ {
		size := r.IntN(1500)
		if s%997 == 0 {
			size = 3 << 20 // over entryStepBytes with its neighbours
		}
		b := bytes.Repeat([]byte{byte(s)}, size)
		m.recs[s], stored[s] = b, b
	}
	writeFirstFormat(t, dir, m.acked, stored)
	o := open(t, dir, 1<<30)
	m.check(t, o, "after conversion")
	first, last := mustAppend(t, o, recs("new", 10, 100))
	if first != m.last+1 {
		t.Fatalf("first append after conversion got seq %d, want %d", first, m.last+1)
	}
	for i, b := range recs("new", 10, 100) {
		m.recs[first+uint64(i)] = b
	}
	m.last = last
	closeOK(t, o)
	o = open(t, dir, 1<<30)
	defer closeOK(t, o)
	m.check(t, o, "after reopen")
	if err := o.Ack(m.last - 3); err != nil {
		t.Fatal(err)
	}
	m.acked = m.last - 3
	m.check(t, o, "after ack")
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{entryPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			return fmt.Errorf("entry %x of the first format left", it.Item().Key())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzChunk decodes arbitrary chunk keys and values as Open, Read and Ack do: never a
// panic, and a value that decodes is exactly the encoding of what it decoded to.
func FuzzChunk(f *testing.F) {
	recs := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("b"), 300)}
	f.Add(chunkKey(12, 3, 301), chunkValue(recs))
	f.Add(chunkKey(1, 1, 0), chunkValue([][]byte{{}}))
	f.Add(chunkKey(5, 2, 1), []byte{0x01, 'x', 0x80})
	f.Add(chunkKey(0, 1, 0), []byte{0})
	f.Add([]byte("c"), []byte{})
	f.Fuzz(func(t *testing.T, key, value []byte) {
		m, err := parseChunkKey(key)
		if err != nil {
			return
		}
		if m.first < 1 || m.first > m.last || m.last-m.first+1 != uint64(m.n) {
			t.Fatalf("key %x parsed to seqs %d..%d with %d records", key, m.first, m.last, m.n)
		}
		var got [][]byte
		var seqs []uint64
		err = walkChunk(m, value, func(seq uint64, off int, rec []byte) bool {
			if !bytes.Equal(value[off:off+len(rec)], rec) {
				t.Fatalf("record at %d is not at its offset", seq)
			}
			got, seqs = append(got, rec), append(seqs, seq)
			return true
		})
		if err != nil {
			if !errors.Is(err, errChunkCorrupt) {
				t.Fatalf("error %v is not errChunkCorrupt", err)
			}
			return
		}
		if !bytes.Equal(chunkValue(got), value) {
			t.Fatalf("value %x decoded to records that encode differently", value)
		}
		for i, s := range seqs {
			if s != m.first+uint64(i) {
				t.Fatalf("record %d has seq %d", i, s)
			}
		}
		if n, err := chunkBytesIn(m, value, m.first, m.last); err != nil || n > uint64(m.bytes) {
			t.Fatalf("chunkBytesIn after the first = %d, %v (all: %d)", n, err, m.bytes)
		}
	})
}

// TestRecords: records of every length-prefix size, added by copy and in place, read
// back by index, and any run of them is a chunk value that decodes to them.
func TestRecords(t *testing.T) {
	var rs Records
	var want [][]byte
	for i, n := range []int{0, 1, 127, 128, 16383, 16384, 1 << 21, 5} {
		rec := bytes.Repeat([]byte{byte(i + 1)}, n)
		if i%2 == 0 {
			rs.Add(rec)
		} else if got := rs.AddFunc(func(b []byte) []byte { return append(b, rec...) }); !bytes.Equal(got, rec) {
			t.Fatalf("AddFunc returned %d bytes, want %d", len(got), n)
		}
		want = append(want, rec)
	}
	for i, w := range want {
		if !bytes.Equal(rs.Record(i), w) {
			t.Fatalf("record %d: %d bytes, want %d", i, len(rs.Record(i)), len(w))
		}
	}
	for start := range want {
		for end := start + 1; end <= len(want); end++ {
			size := 0
			for _, w := range want[start:end] {
				size += len(w)
			}
			m := chunkMeta{first: 10, last: 10 + uint64(end-start) - 1, n: uint32(end - start), bytes: uint32(size)}
			var got [][]byte
			if err := walkChunk(m, rs.value(start, end), func(_ uint64, _ int, rec []byte) bool {
				got = append(got, rec)
				return true
			}); err != nil {
				t.Fatalf("records %d..%d: %v", start, end, err)
			}
			for i := range got {
				if !bytes.Equal(got[i], want[start+i]) {
					t.Fatalf("records %d..%d: record %d differs", start, end, i)
				}
			}
		}
	}
}

// chunkValue is the chunk value of recs.
func chunkValue(recs [][]byte) []byte {
	var rs Records
	for _, r := range recs {
		rs.Add(r)
	}
	if rs.Len() == 0 {
		return nil
	}
	return rs.value(0, rs.Len())
}

// TestRecordsReset appends batches through one Records reset between them (as the agent
// reuses its publish buffers): each batch is stored as it was added, and what a later
// batch writes into the reused buffer does not change an earlier one.
func TestRecordsReset(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	var rs Records
	var want [][]byte
	for b, shape := range [][2]int{{300, 200}, {5, 9000}, {1000, 50}, {1, 0}} {
		batch := recs(fmt.Sprintf("b%d", b), shape[0], shape[1])
		rs.Reset()
		for _, r := range batch {
			rs.Add(r)
		}
		if _, _, err := o.AppendRecords(context.Background(), &rs); err != nil {
			t.Fatal(err)
		}
		want = append(want, batch...)
	}
	got := readAll(t, o, 1)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i, e := range got {
		if !bytes.Equal(e.Data, want[i]) {
			t.Fatalf("record %d (seq %d) differs after its buffer was reused", i, e.Seq)
		}
	}
}
