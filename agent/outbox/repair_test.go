package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// longPosition is stored in the value log (it is over the value threshold), so even a
// repair that reads only the value log keeps it.
const longPosition = "lsn-0000000000000000000000000000000042"

// damagedFixture is an outbox holding 2,000 records of 300 bytes in 20 Appends, seqs
// 1-150 acknowledged, with a source position set by the first Append; closed, so its index is in a table file.
type damagedFixture struct {
	dir      string
	instance string // the outbox's instance id, which a repair keeps
	recs     map[uint64][]byte
	// chunks are the chunk entries of the value log, in file order.
	chunks []vlogChunk
}

type vlogChunk struct {
	m          chunkMeta
	off, end   int
	valueBytes int
}

func newDamagedFixture(t *testing.T) *damagedFixture {
	t.Helper()
	f := &damagedFixture{dir: filepath.Join(t.TempDir(), "outbox"), recs: map[uint64][]byte{}}
	o := open(t, f.dir, 0)
	var err error
	if f.instance, err = o.Instance(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rs := recs(string(rune('a'+i)), 100, 300)
		var pos []Position
		if i == 0 { // in the intact part of the value log in every test
			pos = []Position{{"src", longPosition}}
		}
		first, _ := mustAppend(t, o, rs, pos...)
		for j, r := range rs {
			f.recs[first+uint64(j)] = r
		}
	}
	if err := o.Ack(150); err != nil {
		t.Fatal(err)
	}
	closeOK(t, o)
	data, err := os.ReadFile(filepath.Join(f.dir, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = scanValueLog(data, func(e vlogEntry) bool {
		if m, err := parseChunkKey(e.Key); err == nil {
			n := len(e.Value)
			_, end, _ := decodeVlogEntry(data[e.Offset:])
			f.chunks = append(f.chunks, vlogChunk{m: m, off: e.Offset, end: e.Offset + end, valueBytes: n})
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.chunks) < 20 {
		t.Fatalf("the value log holds %d chunks, want at least 20", len(f.chunks))
	}
	return f
}

// checkHolds checks that the outbox in dir delivers exactly the records of seqs lo..hi.
func (f *damagedFixture) checkHolds(t *testing.T, o *Outbox, lo, hi uint64) {
	t.Helper()
	es := readAll(t, o, 0)
	if len(es) != int(hi-lo+1) {
		t.Fatalf("the repaired outbox delivers %d records, want seqs %d-%d", len(es), lo, hi)
	}
	for i, e := range es {
		if e.Seq != lo+uint64(i) || !bytes.Equal(e.Data, f.recs[e.Seq]) {
			t.Fatalf("record %d: seq %d, data %.20q; want seq %d, %.20q", i, e.Seq, e.Data, lo+uint64(i), f.recs[lo+uint64(i)])
		}
	}
	if v, ok, err := o.Position("src"); err != nil || !ok || v != longPosition {
		t.Fatalf("position src = %q, %v, %v; want %q", v, ok, err, longPosition)
	}
}

func countChunkSeqs(cs []vlogChunk) uint64 {
	var n uint64
	for _, c := range cs {
		n += uint64(c.m.n)
	}
	return n
}

// firstLostAfter is the lowest seq of the chunks from the i-th of the value log on.
func (f *damagedFixture) firstLostAfter(i int) uint64 {
	first := uint64(1 << 62)
	for _, c := range f.chunks[i:] {
		first = min(first, c.m.first)
	}
	return first
}

func damageOf(t *testing.T, err error) *Damage {
	t.Helper()
	var d *Damage
	if !errors.Is(err, ErrDamaged) || !errors.As(err, &d) {
		t.Fatalf("Open of a damaged outbox: %v; want a *Damage", err)
	}
	return d
}

func TestTruncatedValueLogIsDamageAndRepairKeepsIntactRecords(t *testing.T) {
	f := newDamagedFixture(t)
	// Cut the value log inside the 40th chunk: it and every later one are lost.
	cut := f.chunks[40]
	if err := os.Truncate(filepath.Join(f.dir, "000001.vlog"), int64(cut.off+10)); err != nil {
		t.Fatal(err)
	}
	// Badger writes a transaction's entries in no particular order: the lost seqs are
	// those of the chunks after the cut in the file.
	lostBytes, firstLost := uint64(0), uint64(2000)
	for _, c := range f.chunks[40:] {
		lostBytes += uint64(c.m.bytes)
		firstLost = min(firstLost, c.m.first)
	}
	if countChunkSeqs(f.chunks[40:]) != 2001-firstLost {
		t.Fatalf("the chunks after the cut are not the newest seqs")
	}

	_, err := Open(Options{Dir: f.dir, Logger: quiet})
	d := damageOf(t, err)
	want := []SeqRange{{firstLost, 2000}}
	if !slices.Equal(d.Unreadable, want) || d.UnreadableBytes != lostBytes || d.IntactEvents != firstLost-151 {
		t.Fatalf("damage: unreadable %v (%d bytes), %d intact; want %v (%d bytes), %d intact",
			d.Unreadable, d.UnreadableBytes, d.IntactEvents, want, lostBytes, firstLost-151)
	}
	if msg := err.Error(); !strings.Contains(msg, "000001.vlog") || !strings.Contains(msg, "seqs "+SeqRange{firstLost, 2000}.String()) {
		t.Fatalf("the damage does not name the file and the seqs: %s", msg)
	}
	// Opening again finds the same damage (nothing was "fixed" by the first open).
	if _, err := Open(Options{Dir: f.dir, Logger: quiet}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("second Open: %v, want the damage again", err)
	}

	rep, err := Repair(Options{Dir: f.dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Damage == nil || rep.FromValueLog || !rep.AckedKnown || rep.AckedSeq != 150 {
		t.Fatalf("report: damage %v, from value log %v, acked %d (known %v)", rep.Damage, rep.FromValueLog, rep.AckedSeq, rep.AckedKnown)
	}
	if !slices.Equal(rep.Salvaged, []SeqRange{{151, firstLost - 1}}) || rep.SalvagedEvents != firstLost-151 || rep.SalvagedBytes != 300*(firstLost-151) {
		t.Fatalf("salvaged %v (%d events, %d bytes), want 151-%d", rep.Salvaged, rep.SalvagedEvents, rep.SalvagedBytes, firstLost-1)
	}
	if !slices.Equal(rep.Lost, want) || rep.LostEvents != 2001-firstLost || rep.LostBytes != lostBytes {
		t.Fatalf("lost %v (%d events, %d bytes), want %v (%d bytes)", rep.Lost, rep.LostEvents, rep.LostBytes, want, lostBytes)
	}
	if !slices.Equal(rep.Positions, []string{"src"}) || len(rep.PositionsLost) != 0 || rep.NextSeq != 2001 {
		t.Fatalf("positions %v, lost %v, next seq %d", rep.Positions, rep.PositionsLost, rep.NextSeq)
	}
	if fi, err := os.Stat(filepath.Join(rep.DamagedDir, "000001.vlog")); err != nil || !strings.HasPrefix(filepath.Base(rep.DamagedDir), "outbox.damaged-") {
		t.Fatalf("the damaged outbox is not kept aside: %s: %v %v", rep.DamagedDir, fi, err)
	}

	o := open(t, f.dir, 0)
	defer closeOK(t, o)
	f.checkInstance(t, o)
	f.checkHolds(t, o, 151, firstLost-1)
	if s := o.Stats(); s.FirstSeq != 151 || s.LastSeq != 2000 || s.PendingEvents != firstLost-151 || s.AckedSeq != 150 {
		t.Fatalf("stats after repair: %+v", s)
	}
	if err := o.Ack(firstLost - 1); err != nil {
		t.Fatal(err)
	}
	if s := o.Stats(); s.FirstSeq != 0 || s.PendingEvents != 0 || s.LastSeq != 2000 {
		t.Fatalf("stats once the salvaged records are acknowledged: %+v", s)
	}
	// New records get seqs above every seq the damaged outbox gave, lost ones included.
	if first, _ := mustAppend(t, o, recs("new", 1, 50)); first != 2001 {
		t.Fatalf("first seq after repair = %d, want 2001", first)
	}
	if es := readAll(t, o, 0); len(es) != 1 || es[0].Seq != 2001 {
		t.Fatalf("after acking the salvaged records the outbox delivers %v, want seq 2001", es)
	}
}

func TestTruncatedTableIsDamageAndRepairReadsTheValueLog(t *testing.T) {
	f := newDamagedFixture(t)
	tables, _ := filepath.Glob(filepath.Join(f.dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file")
	}
	slices.Sort(tables)
	fi, err := os.Stat(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(tables[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}

	_, err = Open(Options{Dir: f.dir, Logger: quiet})
	d := damageOf(t, err)
	if !strings.Contains(err.Error(), filepath.Base(tables[0])) || len(d.Unreadable) != 0 {
		t.Fatalf("the damage does not name %s: %v", filepath.Base(tables[0]), err)
	}

	rep, err := Repair(Options{Dir: f.dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// The acknowledged mark was in the table: the acknowledged records still in the
	// value log come back (the control plane drops them as duplicates).
	if !rep.FromValueLog || rep.AckedKnown || !slices.Equal(rep.Salvaged, []SeqRange{{1, 2000}}) ||
		rep.SalvagedEvents != 2000 || len(rep.Lost) != 0 || rep.NextSeq != 2001 {
		t.Fatalf("report: from value log %v, acked known %v, salvaged %v (%d), lost %v, next %d",
			rep.FromValueLog, rep.AckedKnown, rep.Salvaged, rep.SalvagedEvents, rep.Lost, rep.NextSeq)
	}
	o := open(t, f.dir, 0)
	defer closeOK(t, o)
	f.checkInstance(t, o)
	f.checkHolds(t, o, 1, 2000)
}

// checkInstance: the repaired outbox keeps its instance id, so the control plane still
// takes it for the seq space it bound the agent to.
func (f *damagedFixture) checkInstance(t *testing.T, o *Outbox) {
	t.Helper()
	if id, err := o.Instance(); err != nil || id != f.instance {
		t.Fatalf("instance after repair = %q, %v; want %q", id, err, f.instance)
	}
}

func TestRepairLeavesAnIntactOutboxAlone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	o := open(t, dir, 0)
	mustAppend(t, o, recs("a", 10, 100))
	closeOK(t, o)
	rep, err := Repair(Options{Dir: dir, Logger: quiet})
	if err != nil || rep.Damage != nil || rep.DamagedDir != "" {
		t.Fatalf("Repair of an intact outbox: %+v, %v", rep, err)
	}
	if aside, _ := filepath.Glob(dir + ".*"); len(aside) != 0 {
		t.Fatalf("Repair of an intact outbox left %v", aside)
	}
	o = open(t, dir, 0)
	defer closeOK(t, o)
	if es := readAll(t, o, 0); len(es) != 10 {
		t.Fatalf("%d records after Repair of an intact outbox, want 10", len(es))
	}
}

// TestRepairResumes: a repair interrupted after the damaged outbox was set aside (the
// work directory exists, the outbox does not) makes Open refuse, and Repair again
// finishes from the directory set aside.
func TestRepairResumes(t *testing.T) {
	f := newDamagedFixture(t)
	if err := os.Truncate(filepath.Join(f.dir, "000001.vlog"), int64(f.chunks[40].off+10)); err != nil {
		t.Fatal(err)
	}
	aside := f.dir + ".damaged-20260101T000000Z"
	if err := os.Rename(f.dir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.dir+repairingSuffix, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: f.dir, Logger: quiet}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "repair was interrupted") {
		t.Fatalf("Open during an interrupted repair: %v", err)
	}
	rep, err := Repair(Options{Dir: f.dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	firstLost := f.firstLostAfter(40)
	if rep.DamagedDir != aside || !slices.Equal(rep.Salvaged, []SeqRange{{151, firstLost - 1}}) {
		t.Fatalf("resumed repair: from %s, salvaged %v", rep.DamagedDir, rep.Salvaged)
	}
	o := open(t, f.dir, 0)
	defer closeOK(t, o)
	f.checkInstance(t, o)
	f.checkHolds(t, o, 151, firstLost-1)
}

// TestCorruptValueLogEntryIsDamage: a corrupted record in the newest value log, with
// intact ones after it, is damage found before Badger opens the outbox (Badger would cut
// the file there and lose the intact records); Repair keeps all but that record.
func TestCorruptValueLogEntryIsDamage(t *testing.T) {
	f := newDamagedFixture(t)
	path := filepath.Join(f.dir, "000001.vlog")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hole := f.chunks[30]
	if hole.m.first <= 150 {
		t.Fatalf("chunk 30 holds seqs %d-%d, acknowledged", hole.m.first, hole.m.last)
	}
	data[hole.end-10] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: f.dir, Logger: quiet})
	damageOf(t, err)
	if msg := err.Error(); !strings.Contains(msg, "000001.vlog") || !strings.Contains(msg, "does not check") {
		t.Fatalf("the damage does not name the value log entry: %s", msg)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("Open changed the damaged value log: %v, %v", fi, err)
	}
	rep, err := Repair(Options{Dir: f.dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	want := []SeqRange{{151, hole.m.first - 1}, {hole.m.last + 1, 2000}}
	if rep.FromValueLog || !slices.Equal(rep.Salvaged, want) || !slices.Equal(rep.Lost, []SeqRange{{hole.m.first, hole.m.last}}) ||
		rep.LostBytes != uint64(hole.m.bytes) {
		t.Fatalf("report: from value log %v, salvaged %v, lost %v (%d bytes); want %v, lost %d-%d",
			rep.FromValueLog, rep.Salvaged, rep.Lost, rep.LostBytes, want, hole.m.first, hole.m.last)
	}
	o := open(t, f.dir, 0)
	defer closeOK(t, o)
	es := append(readAll(t, o, 0), readAll(t, o, hole.m.first)...)
	if len(es) != int(2000-150-hole.m.n) {
		t.Fatalf("the repaired outbox delivers %d records, want %d", len(es), 2000-150-hole.m.n)
	}
	for _, e := range es {
		if !bytes.Equal(e.Data, f.recs[e.Seq]) || (e.Seq >= hole.m.first && e.Seq <= hole.m.last) {
			t.Fatalf("seq %d: %.20q", e.Seq, e.Data)
		}
	}
}

// TestReadStopsAtGap: a repaired outbox may have a gap in seqs (records lost between
// intact ones); each Read returns consecutive seqs and the next one starts past the gap.
func TestReadStopsAtGap(t *testing.T) {
	f := newDamagedFixture(t)
	tables, _ := filepath.Glob(filepath.Join(f.dir, "*.sst"))
	for _, p := range tables {
		if err := os.Truncate(p, 100); err != nil {
			t.Fatal(err)
		}
	}
	// Corrupt one chunk's value in the value log: the value-log salvage skips it.
	path := filepath.Join(f.dir, "000001.vlog")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hole := f.chunks[30]
	data[hole.end-10] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Repair(Options{Dir: f.dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	before := SeqRange{1, hole.m.first - 1}
	if !slices.Equal(rep.Lost, []SeqRange{{hole.m.first, hole.m.last}}) {
		t.Fatalf("lost %v, want %v", rep.Lost, SeqRange{hole.m.first, hole.m.last})
	}
	o := open(t, f.dir, 0)
	defer closeOK(t, o)
	es := readAll(t, o, 0)
	if len(es) != int(before.Last) || es[len(es)-1].Seq != before.Last {
		t.Fatalf("first read returned %d records up to seq %d, want %v", len(es), es[len(es)-1].Seq, before)
	}
	es = readAll(t, o, before.Last+1)
	if len(es) == 0 || es[0].Seq != hole.m.last+1 || es[len(es)-1].Seq != 2000 {
		t.Fatalf("read past the gap returned %d records from seq %d", len(es), es[0].Seq)
	}
}

// TestDamageWhileRunningRefusesAppends: a record that no longer reads back (a value-log
// byte flipped under the running outbox) fails the read, and from then on Appends are
// refused with ErrDamaged instead of being acknowledged.
func TestDamageWhileRunningRefusesAppends(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0)
	defer o.Close()
	mustAppend(t, o, recs("a", 10, 100))
	path := filepath.Join(dir, "000001.vlog")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var at int
	scanValueLog(data, func(e vlogEntry) bool {
		if _, err := parseChunkKey(e.Key); err == nil && e.Corrupt == nil {
			at = e.Offset + len(e.Value) // inside the key or value: the checksum fails
		}
		return true
	})
	if at == 0 {
		t.Fatal("no chunk in the value log")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[at] ^ 0xff}, int64(at)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := o.Read(0, 0, 0); err == nil {
		t.Fatal("Read of a corrupted record succeeded")
	}
	_, _, err = o.Append(context.Background(), recs("b", 1, 100))
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Append after the damage showed: %v, want ErrDamaged", err)
	}
	if s := o.Stats(); !s.Blocked || !strings.Contains(s.BlockedReason, "damaged") {
		t.Fatalf("stats do not show the damage: %+v", s)
	}
}

// TestValueLogSalvageNewestVersionWins: seqs given twice (a write lost before it was
// acknowledged, its seqs given again) leave two chunks in the value log; the newer one
// is salvaged. A seq range no chunk holds is reported lost.
func TestValueLogSalvageNewestVersionWins(t *testing.T) {
	dir := t.TempDir()
	chunk := func(last uint64, version uint64, rs ...string) []byte {
		var bs [][]byte
		size := 0
		for _, r := range rs {
			bs, size = append(bs, []byte(r)), size+len(r)
		}
		return encodeVlogEntry(0x40, chunkKey(last, len(rs), size), version, chunkValue(bs))
	}
	file := make([]byte, vlogFileHeader)
	file = append(file, chunk(3, 5, "old-1", "old-2", "old-3")...)
	file = append(file, chunk(2, 7, "new-1", "new-2")...) // the seqs 1-2 given again, later
	file = append(file, chunk(4, 8, "new-3", "new-4")...)
	file = append(file, chunk(7, 9, "new-7")...) // 5-6 lost
	file = append(file, encodeVlogEntry(0x40, []byte("p/src"), 9, []byte(longPosition))...)
	if err := os.WriteFile(filepath.Join(dir, "000001.vlog"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "outbox")
	w, err := newOutboxWriter(work, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := salvageValueLog(dir, w)
	if err == nil {
		err = w.finish(sv)
	}
	if err != nil {
		t.Fatal(err)
	}
	var rep RepairReport
	sv.report(&rep)
	if !slices.Equal(rep.Salvaged, []SeqRange{{1, 4}, {7, 7}}) || !slices.Equal(rep.Lost, []SeqRange{{5, 6}}) || rep.Positions[0] != "src" {
		t.Fatalf("salvaged %v, lost %v, positions %v", rep.Salvaged, rep.Lost, rep.Positions)
	}
	o := open(t, work, 0)
	defer closeOK(t, o)
	es := append(readAll(t, o, 0), readAll(t, o, 5)...)
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%d:%s", e.Seq, e.Data))
	}
	if want := []string{"1:new-1", "2:new-2", "3:new-3", "4:new-4", "7:new-7"}; !slices.Equal(got, want) {
		t.Fatalf("salvaged %v, want %v", got, want)
	}
	if first, _ := mustAppend(t, o, recs("x", 1, 10)); first != 8 {
		t.Fatalf("next seq %d, want 8", first)
	}
}

// TestRepairRefusesAnOpenOutbox: the agent holds the outbox; Repair neither opens nor
// moves it.
func TestRepairRefusesAnOpenOutbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	o := open(t, dir, 0)
	defer closeOK(t, o)
	mustAppend(t, o, recs("a", 3, 100))
	_, err := Repair(Options{Dir: dir, Logger: quiet})
	if err == nil || errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "Another process is using") {
		t.Fatalf("Repair of an outbox in use: %v", err)
	}
	if aside, _ := filepath.Glob(dir + ".*"); len(aside) != 0 {
		t.Fatalf("Repair of an outbox in use left %v", aside)
	}
}
