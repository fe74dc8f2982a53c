package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/time/rate"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// smallLedger has a few events, an agent, a token and a CA: every kind of key.
func smallLedger(t *testing.T, disk bool) (*Ledger, *raftLog) {
	l := newLedger(t, disk)
	lg := &raftLog{t: t}
	lg.ingest(l, "a1", agentEvent(1, "e1", "sku", "S1", "location", "WH1"), agentEvent(2, "e2", "sku", "S2"))
	putToken(t, lg, l, &storev1.PutToken{Id: "t1", SecretSha256: hashOf("s"), ExpiresAt: ts(at(100))})
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_TOKEN, &storev1.PutAdminToken{Id: "adm", SecretSha256: hashOf("a")}))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{CertPem: "c", KeyPem: "k"}))
	return l, lg
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	l, _ := keyedLedger(t, 300, 17)
	cp := testSnapshotRestore(t, l)
	f := Filter{Keys: map[string]string{"sku": "SKU-2"}, Type: "price"}
	if a, b := seqsOf(listAll(t, l, f, 1, 7)), seqsOf(listAll(t, cp, f, 1, 7)); !slices.Equal(a, b) || len(a) == 0 {
		t.Errorf("restored index lists %v, original %v", b, a)
	}
	// The copy carries on from the snapshot's index like the original.
	next := l.AppliedIndex() + 1
	cmd := ingestCmd(t, "a1", agentEvent(1000, "new"))
	for _, x := range []*Ledger{l, cp} {
		if _, err := x.Apply(next, at(next), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if mustHash(t, l) != mustHash(t, cp) {
		t.Error("original and restored copy differ after the same apply")
	}

	// Restoring into an in-memory ledger that has other state replaces it.
	mem, _ := smallLedger(t, false)
	ch := mem.Changed()
	if err := mem.Restore(bytes.NewReader(snapshotBytes(t, l))); err != nil {
		t.Fatal(err)
	}
	if mustHash(t, mem) != mustHash(t, l) || mem.AppliedIndex() != l.AppliedIndex() {
		t.Error("in-memory restore differs")
	}
	if _, _, ok, _ := mem.CA(); ok {
		t.Error("state from before the restore survived it")
	}
	select {
	case <-ch:
	default:
		t.Error("Restore did not signal Changed")
	}
}

func TestSnapshotOfEmptyLedger(t *testing.T) {
	l := newLedger(t, false)
	cp := testSnapshotRestore(t, l)
	if cp.AppliedIndex() != 0 || cp.LastSeq() != 0 {
		t.Errorf("restored empty ledger: %d, %d", cp.AppliedIndex(), cp.LastSeq())
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	l, lg := smallLedger(t, true)
	snap, err := l.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	wantHash, wantIndex := mustHash(t, l), l.AppliedIndex()
	if snap.Index() != wantIndex {
		t.Errorf("Snapshot.Index = %d, want %d", snap.Index(), wantIndex)
	}
	// Applies continue while the snapshot is open; it is persisted afterwards.
	lg.ingest(l, "a1", agentEvent(3, "e3"), agentEvent(4, "e4"))
	consume(t, lg, l, &storev1.ConsumeToken{Id: "t1", SecretSha256: hashOf("s"), At: ts(at(7))})
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	cp := newLedger(t, false)
	if err := cp.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if mustHash(t, cp) != wantHash || cp.AppliedIndex() != wantIndex || cp.LastSeq() != 2 {
		t.Errorf("snapshot does not reflect its point in time: index %d, last seq %d", cp.AppliedIndex(), cp.LastSeq())
	}
	if rec, _, _ := cp.Token("t1"); rec.GetUsed() {
		t.Error("snapshot includes a later consume")
	}
}

// assertUnchanged fails unless l still has the given hash and index.
func assertUnchanged(t *testing.T, l *Ledger, hash string, index uint64, what string) {
	t.Helper()
	if mustHash(t, l) != hash || l.AppliedIndex() != index {
		t.Fatalf("%s changed the state", what)
	}
}

func TestRestoreRefusesCorruptStreams(t *testing.T) {
	src, _ := smallLedger(t, false)
	compressed := snapshotBytes(t, src)
	if !bytes.HasPrefix(compressed, []byte(snapshotMagicZ)) {
		t.Fatalf("WriteTo does not compress: stream begins %q", compressed[:8])
	}
	// Every byte of the stream inside is checked (magic, framing, SHA-256)...
	valid := plainSnapshot(t, compressed)
	target, _ := keyedLedger(t, 20, 17)
	hash, index := mustHash(t, target), target.AppliedIndex()

	check := func(data []byte, what string) {
		t.Helper()
		err := target.Restore(bytes.NewReader(data))
		if !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("%s: Restore = %v, want ErrSnapshotCorrupt", what, err)
		}
		assertUnchanged(t, target, hash, index, what)
	}
	for n := range len(valid) {
		check(valid[:n], "truncated stream")
	}
	for i := range valid {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := slices.Clone(valid)
			b[i] ^= mask
			check(b, "flipped byte")
		}
	}
	check(append(slices.Clone(valid), 0), "trailing byte")
	check([]byte("CDXSNAP2"+string(valid[8:])), "other magic")
	check([]byte("not a snapshot at all"), "garbage")

	// Well-formed framing with a recomputed checksum but keys out of order.
	recs := [][2]string{{"b", "1"}, {"a", "2"}}
	check(buildStream(recs, true), "keys out of order")
	check(buildStream([][2]string{{"m/applied", "123"}}, true), "short counter")
	check(buildStream([][2]string{{"!badger!x", ""}}, true), "reserved key")

	// An I/O error from the source is reported as such, not as corruption.
	err := target.Restore(io.MultiReader(bytes.NewReader(valid[:20]), errReader{}))
	if err == nil || errors.Is(err, ErrSnapshotCorrupt) {
		t.Errorf("read error: Restore = %v", err)
	}
	assertUnchanged(t, target, hash, index, "a read error")

	// ...and a damaged compressed stream is refused, or, where zstd's framing leaves a
	// bit unused, restores exactly the source's state: never another one.
	srcHash := mustHash(t, src)
	for n := range len(compressed) {
		check(compressed[:n], "truncated compressed stream")
	}
	z, _ := keyedLedger(t, 20, 17)
	zHash, zIndex := mustHash(t, z), z.AppliedIndex()
	for i := range compressed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := slices.Clone(compressed)
			b[i] ^= mask
			err := z.Restore(bytes.NewReader(b))
			switch {
			case err == nil:
				if zHash, zIndex = mustHash(t, z), z.AppliedIndex(); zHash != srcHash {
					t.Fatalf("compressed byte %d ^ %#x: restored a state that is not the snapshot's", i, mask)
				}
			case errors.Is(err, ErrSnapshotCorrupt):
				assertUnchanged(t, z, zHash, zIndex, "a damaged compressed stream")
			default:
				t.Fatalf("compressed byte %d ^ %#x: Restore = %v, want ErrSnapshotCorrupt", i, mask, err)
			}
		}
	}
	check(append(slices.Clone(compressed), 0), "trailing byte after the compressed stream")
}

// plainSnapshot is the uncompressed stream inside a compressed one.
func plainSnapshot(t *testing.T, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(bytes.TrimPrefix(b, []byte(snapshotMagicZ)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRestoreCorruptOnDiskLeavesNoLeftovers(t *testing.T) {
	src, _ := smallLedger(t, false)
	valid := snapshotBytes(t, src)
	l, _ := smallLedger(t, true)
	hash, index := mustHash(t, l), l.AppliedIndex()
	before := dirNames(t, l.opts.Dir)
	for _, data := range [][]byte{valid[:len(valid)-1], valid[:len(valid)/2], append(slices.Clone(valid), 1)} {
		if err := l.Restore(bytes.NewReader(data)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("Restore = %v, want ErrSnapshotCorrupt", err)
		}
		assertUnchanged(t, l, hash, index, "corrupt restore")
	}
	if after := dirNames(t, l.opts.Dir); !slices.Equal(after, before) {
		t.Errorf("ledger dir %v after failed restores, was %v", after, before)
	}
}

func TestRestoreOnDiskSurvivesReopen(t *testing.T) {
	src, _ := keyedLedger(t, 50, 17)
	data := snapshotBytes(t, src)
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lg := &raftLog{t: t}
	lg.ingest(l, "old", agentEvent(1, "old"))
	// An open snapshot keeps the replaced database alive until it is released.
	snap, err := l.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, dir); len(got) != 3 {
		t.Errorf("ledger dir while the old snapshot is open: %v", got)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("snapshot of the replaced database: %v", err)
	}
	snap.Release()
	snap.Release()
	if got := dirNames(t, dir); len(got) != 2 {
		t.Errorf("ledger dir after release: %v, want CURRENT and one database", got)
	}
	if idx, err := VerifySnapshot(&buf); err != nil || idx != 1 {
		t.Errorf("old snapshot: index %d, %v", idx, err)
	}
	want := mustHash(t, src)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if mustHash(t, l) != want || l.AppliedIndex() != src.AppliedIndex() || l.LastSeq() != 50 {
		t.Error("restored state lost after reopen")
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	before := dirNames(t, dir)
	// What a crash in the middle of a Restore leaves.
	for _, p := range []string{dir + "/db-00000000000000000009", dir + "/" + restoreSpoolPrefix + "123"} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if after := dirNames(t, dir); !slices.Equal(after, before) {
		t.Errorf("ledger dir %v after reopen, want %v", after, before)
	}
}

func TestOpenNeedsDir(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Error("Open without Dir succeeded")
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Name() != filterDirName { // the mapped id filters (filterspace.go), always there
			names = append(names, e.Name())
		}
	}
	return names
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestRestoreLargeValues: a snapshot whose large values (those Badger keeps in its value
// log) add up to more than a value log file's mapping restores on disk. Badger counts
// such a value as its pointer when it fills a write batch, so one commit took them all,
// grew the mapping with mremap, which failed with EFAULT ("bad address") on the mapping
// mapadvise had split: a joining node could not restore a 4 million event ledger.
func TestRestoreLargeValues(t *testing.T) {
	src, _ := smallLedger(t, false)
	var recs [][2]string
	if _, err := readSnapshot(bytes.NewReader(snapshotBytes(t, src)), func(k, v []byte) error {
		recs = append(recs, [2]string{string(k), string(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'v'}, 1<<20)
	for i := range 2*valueLogFileSize>>20 + 16 { // past the 2 x 128 MiB mapping
		big[0] = byte(i)
		recs = append(recs, [2]string{fmt.Sprintf("zz/large/%04d", i), string(big)})
	}
	slices.SortFunc(recs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	l := newLedger(t, true)
	if err := l.Restore(bytes.NewReader(buildStream(recs, true))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if l.AppliedIndex() != src.AppliedIndex() {
		t.Fatalf("restored applied index %d, want %d", l.AppliedIndex(), src.AppliedIndex())
	}
}

// TestSnapshotThrottle: a throttled snapshot streams the same bytes as one at full
// speed, and one whose context ends fails with that reason instead of waiting on.
func TestSnapshotThrottle(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	k.add(20_000, 500, skuKeys(40), l) // several MiB: the stream waits on its limit
	write := func(ctx context.Context, limit *rate.Limiter) ([]byte, error) {
		s, err := l.OpenSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Release()
		if limit != nil {
			s.Throttle(ctx, limit)
		}
		var b bytes.Buffer
		_, err = s.WriteTo(&b)
		return b.Bytes(), err
	}
	full, err := write(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	throttled, err := write(context.Background(), NewSnapshotLimiter(1<<40))
	if err != nil || !bytes.Equal(full, throttled) {
		t.Fatalf("throttled snapshot differs from the unthrottled one (err %v, %d vs %d bytes)", err, len(throttled), len(full))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := write(ctx, NewSnapshotLimiter(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("a throttled snapshot whose context is done: %v, want context.Canceled", err)
	}
}

func TestInspectSnapshotSections(t *testing.T) {
	l, _ := smallLedger(t, true)
	snap := snapshotBytes(t, l)

	// What the sections should add up to: every record, read independently.
	var records, size uint64
	perPrefix := map[string]uint64{}
	if _, err := readSnapshot(bytes.NewReader(snap), func(k, v []byte) error {
		records++
		size += uint64(8 + len(k) + len(v))
		if bytes.HasPrefix(k, prefixLog) {
			perPrefix["l/"]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	info, sections, err := InspectSnapshotSections(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	if info.Index != l.AppliedIndex() {
		t.Errorf("index %d, want %d", info.Index, l.AppliedIndex())
	}
	var gotRecords, gotBytes uint64
	byPrefix := map[string]SnapshotSection{}
	for i, s := range sections {
		if i > 0 && sections[i-1].Prefix >= s.Prefix {
			t.Errorf("sections not sorted: %q before %q", sections[i-1].Prefix, s.Prefix)
		}
		gotRecords += s.Records
		gotBytes += s.Bytes
		byPrefix[s.Prefix] = s
	}
	if gotRecords != records || gotBytes != size {
		t.Errorf("sections hold %d records and %d bytes, the stream %d and %d", gotRecords, gotBytes, records, size)
	}
	// The log's records are chunks of events, not events.
	if got := byPrefix["l/"]; got.Records == 0 || got.Records != perPrefix["l/"] || got.Name == "" {
		t.Errorf("log section %+v, want the stream's %d chunks, named", got, perPrefix["l/"])
	}
	for _, p := range []string{"ca", "adm/", "tok/", "m/", "t/", "a/"} {
		if s, ok := byPrefix[p]; !ok || s.Records == 0 || s.Name == "" {
			t.Errorf("section %q: %+v, want named records", p, s)
		}
	}

	// A damaged stream is refused whole.
	bad := slices.Clone(snap)
	bad[len(bad)/2] ^= 0xff
	if _, s, err := InspectSnapshotSections(bytes.NewReader(bad)); err == nil || s != nil {
		t.Errorf("damaged snapshot: sections %v, err %v; want an error and none", s, err)
	}
}

func TestSectionOf(t *testing.T) {
	for k, want := range map[string]string{
		"l/\x00\x00\x00\x00\x00\x00\x00\x01": "l/",
		"fleet/audit/\x00\x01":               "fleet/audit/",
		"fleet/x":                            "fleet/",
		"ca":                                 "ca",
		"m/applied":                          "m/",
		"a-key-without-a-slash-that-is-long": "a-key-without-a-",
		"":                                   "",
	} {
		if got := string(sectionOf([]byte(k))); got != want {
			t.Errorf("sectionOf(%q) = %q, want %q", k, got, want)
		}
	}
}
