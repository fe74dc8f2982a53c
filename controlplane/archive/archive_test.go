package archive_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// archiver is a copy of the ledger's Archiver hook (controlplane/ledger, branch
// retention): *archive.Dir must satisfy it for the lead to wire it.
type archiver interface {
	Archive(ctx context.Context, events []*eventv1.CommittedEvent) error
}

var _ archiver = (*archive.Dir)(nil)

var day1 = time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)

// testEvents makes n events from seq first, alternating inventory.level and order, one
// minute apart from at.
func testEvents(first uint64, n int, at time.Time) []*eventv1.CommittedEvent {
	var out []*eventv1.CommittedEvent
	for i := range n {
		seq := first + uint64(i)
		e := &eventv1.Event{Id: fmt.Sprintf("ev_%04d", seq), Keys: map[string]string{"sku": fmt.Sprintf("A-%d", seq%7)}}
		if i%2 == 0 {
			e.Type = "inventory.level"
			e.Payload = &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: e.Keys["sku"], Location: "WH1", OnHand: fmt.Sprint(seq)}}
		} else {
			e.Type = "order"
			e.Keys = map[string]string{"order_number": fmt.Sprintf("SO-%d", seq)}
			e.Payload = &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: fmt.Sprintf("SO-%d", seq)}}
		}
		out = append(out, &eventv1.CommittedEvent{Seq: seq, Event: e, CommittedAt: timestamppb.New(at.Add(time.Duration(i) * time.Minute)), Agent: "agt_1", AgentSeq: seq})
	}
	return out
}

func openDir(t *testing.T) (*archive.Dir, string) {
	t.Helper()
	root := t.TempDir()
	d, err := archive.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return d, root
}

func collect(t *testing.T, d *archive.Dir, f archive.Filter) ([]*eventv1.CommittedEvent, error) {
	t.Helper()
	it, err := d.Events(context.Background(), f)
	if err != nil {
		return nil, err
	}
	var out []*eventv1.CommittedEvent
	for {
		ev, err := it.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

func seqs(evs []*eventv1.CommittedEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.GetSeq())
	}
	return out
}

// TestRoundTrip archives events over two days and two types into real files and reads
// them back, equal and in seq order across files.
func TestRoundTrip(t *testing.T) {
	d, root := openDir(t)
	evs := testEvents(100, 200, day1) // 22:00 on Dec 3 to 01:19 on Dec 4
	if err := d.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"2026/12/03/manifest.json",
		"2026/12/03/inventory.level/000000000100-000000000218.pb.gz",
		"2026/12/03/order/000000000101-000000000219.pb.gz",
		"2026/12/04/manifest.json",
		"2026/12/04/inventory.level/000000000220-000000000298.pb.gz",
		"2026/12/04/order/000000000221-000000000299.pb.gz",
	} {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(name))); err != nil {
			t.Errorf("expected archive file: %v", err)
		}
	}
	l, err := d.List(context.Background(), archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 4 || len(l.Damaged) != 0 {
		t.Fatalf("listing: %d files, %d damaged manifests; want 4, 0", len(l.Files), len(l.Damaged))
	}
	f0 := l.Files[0]
	if f0.Events != 60 || f0.FirstSeq != 100 || f0.LastSeq != 218 || !f0.FirstTime.Equal(day1) || f0.Day() != "2026-12-03" {
		t.Errorf("first file: %+v", f0)
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("read %d events, archived %d", len(got), len(evs))
	}
	for i := range evs {
		if !proto.Equal(got[i], evs[i]) {
			t.Fatalf("event %d: read %v, archived %v", i, got[i], evs[i])
		}
	}
	for _, f := range l.Files {
		if err := d.Check(context.Background(), f); err != nil {
			t.Errorf("check %s: %v", f.Name, err)
		}
	}
}

// TestMaxFileEvents splits a group into files of at most MaxFileEvents, read back in order.
func TestMaxFileEvents(t *testing.T) {
	d, _ := openDir(t)
	d.MaxFileEvents = 7
	evs := testEvents(1, 40, day1.Add(-10*time.Hour))
	if err := d.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	l, err := d.List(context.Background(), archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 6 { // 20 of each type: 7+7+6, twice
		t.Fatalf("%d files, want 6", len(l.Files))
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil || len(got) != 40 {
		t.Fatalf("read %d events (%v), want 40", len(got), err)
	}
	for i, e := range got {
		if e.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not in seq order", i, e.GetSeq())
		}
	}
}

func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		st, _ := e.Info()
		out[strings.TrimPrefix(p, root)] = fmt.Sprintf("%x %s", sha256.Sum256(b), st.ModTime())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestArchiveIdempotent archives the same events again (a prune replayed after a crash):
// nothing is written again. With the manifest lost after the files were written (a crash
// between the two), archiving again writes the same bytes and restores it.
func TestArchiveIdempotent(t *testing.T) {
	d, root := openDir(t)
	evs := testEvents(1, 50, day1)
	ctx := context.Background()
	if err := d.Archive(ctx, evs); err != nil {
		t.Fatal(err)
	}
	before := readTree(t, root)
	rev := make([]*eventv1.CommittedEvent, len(evs))
	for i, e := range evs {
		rev[len(evs)-1-i] = e // another order, and a duplicate
	}
	if err := d.Archive(ctx, append(rev, evs[3])); err != nil {
		t.Fatal(err)
	}
	after := readTree(t, root)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("archiving the same events again changed the archive:\nbefore %v\nafter  %v", before, after)
	}

	manifest := filepath.Join(root, "2026", "12", "03", "manifest.json")
	want, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	if err := d.Archive(ctx, evs); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("manifest written again differs:\n%s\nwant\n%s", got, want)
	}
	for p, sum := range readTree(t, root) {
		if strings.HasSuffix(p, ".pb.gz") && strings.Fields(sum)[0] != strings.Fields(before[p])[0] {
			t.Errorf("%s: rewritten with other bytes", p)
		}
	}
	evs2, err := collect(t, d, archive.Filter{})
	if err != nil || len(evs2) != 50 {
		t.Fatalf("read %d events (%v), want 50", len(evs2), err)
	}
}

// damage rewrites one file's bytes through fn.
func damage(t *testing.T, root, name string, fn func([]byte) []byte) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(name))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestChecksumMismatch: a file whose bytes differ from its manifest entry is reported
// with its name and the reason, by Check, Stat-independent, and by the iterator before
// any of its events.
func TestChecksumMismatch(t *testing.T) {
	d, root := openDir(t)
	if err := d.Archive(context.Background(), testEvents(1, 20, day1)); err != nil {
		t.Fatal(err)
	}
	name := "2026/12/03/inventory.level/000000000001-000000000019.pb.gz"
	damage(t, root, name, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b })
	got, err := collect(t, d, archive.Filter{})
	var de *archive.DamagedError
	if !errors.As(err, &de) || de.Name != name || !strings.Contains(de.Reason, "checksum mismatch") {
		t.Fatalf("want a checksum mismatch naming %s, got %v", name, err)
	}
	if len(got) != 0 {
		t.Fatalf("yielded %d events (seqs %v) before reporting the damaged file", len(got), seqs(got))
	}
	l, _ := d.List(context.Background(), archive.Filter{})
	for _, f := range l.Files {
		err := d.Check(context.Background(), f)
		if (f.Name == name) != (err != nil) {
			t.Errorf("check %s: %v", f.Name, err)
		}
		if f.Name == name && !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name the file: %v", err)
		}
	}
}

// TestTruncatedGzip: a file cut short is reported: by its size (Stat) and checksum, and
// when the manifest was made to match it, by the gzip stream ending early: no event of
// it is yielded either way.
func TestTruncatedGzip(t *testing.T) {
	d, root := openDir(t)
	ctx := context.Background()
	if err := d.Archive(ctx, testEvents(1, 20, day1)); err != nil {
		t.Fatal(err)
	}
	name := "2026/12/03/order/000000000002-000000000020.pb.gz"
	damage(t, root, name, func(b []byte) []byte { return b[:len(b)-12] })
	l, _ := d.List(ctx, archive.Filter{Types: []string{"order"}})
	if err := d.Stat(ctx, l.Files[0]); err == nil || !strings.Contains(err.Error(), "bytes, the manifest says") {
		t.Errorf("stat of a truncated file: %v", err)
	}
	if _, err := collect(t, d, archive.Filter{Types: []string{"order"}}); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("want a checksum mismatch, got %v", err)
	}

	// Make the manifest match the truncated bytes: the decoder must still refuse it.
	mp := filepath.Join(root, "2026", "12", "03", "manifest.json")
	var m archive.Manifest
	b, _ := os.ReadFile(mp)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	sum := sha256.Sum256(data)
	for i := range m.Files {
		if m.Files[i].Name == name {
			m.Files[i].SHA256, m.Files[i].Bytes = hex.EncodeToString(sum[:]), int64(len(data))
		}
	}
	b, _ = json.Marshal(m)
	if err := os.WriteFile(mp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := collect(t, d, archive.Filter{Types: []string{"order"}})
	var de *archive.DamagedError
	if !errors.As(err, &de) || de.Name != name || !strings.Contains(de.Reason, "unexpected EOF") {
		t.Fatalf("want the truncated stream reported for %s, got %v", name, err)
	}
	if len(got) != 0 {
		t.Fatalf("yielded seqs %v of a truncated file", seqs(got))
	}
}

// TestDamagedManifest: a manifest that does not parse is reported and nothing of its
// day is read. The next prune of that day rebuilds it from the day's files (so a damaged
// manifest does not stop a node's prunes), keeping the damaged one aside.
func TestDamagedManifest(t *testing.T) {
	d, root := openDir(t)
	ctx := context.Background()
	if err := d.Archive(ctx, testEvents(1, 4, day1)); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(root, "2026", "12", "03", "manifest.json")
	garbage := []byte(`{"version":1,"day":"2026-12-03","files":[{"name":"../../x"`)
	if err := os.WriteFile(mp, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := d.List(ctx, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Damaged) != 1 || l.Damaged[0].Name != "2026/12/03/manifest.json" || len(l.Files) != 0 {
		t.Fatalf("listing: %+v", l)
	}
	if _, err := collect(t, d, archive.Filter{}); err == nil || !strings.Contains(err.Error(), "manifest.json is damaged") {
		t.Fatalf("want the damaged manifest reported, got %v", err)
	}

	if err := d.Archive(ctx, testEvents(5, 2, day1.Add(time.Hour))); err != nil {
		t.Fatalf("archiving into a day with a damaged manifest: %v", err)
	}
	if b, err := os.ReadFile(mp + ".damaged"); err != nil || !bytes.Equal(b, garbage) {
		t.Fatalf("the damaged manifest was not kept aside: %v", err)
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs(got)) != "[1 2 3 4 5 6]" {
		t.Fatalf("after the rebuild the archive holds seqs %v, want 1..6", seqs(got))
	}
}

// TestMissingManifest: a day whose manifest is gone while its files are there is reported
// (not skipped as empty); the next prune of that day lists the files again.
func TestMissingManifest(t *testing.T) {
	d, root := openDir(t)
	ctx := context.Background()
	if err := d.Archive(ctx, testEvents(1, 4, day1)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "2026", "12", "03", "manifest.json")); err != nil {
		t.Fatal(err)
	}
	l, err := d.List(ctx, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Damaged) != 1 || !strings.Contains(l.Damaged[0].Reason, "missing, and the day has 2 archive files") {
		t.Fatalf("listing: %+v", l)
	}
	if err := d.Archive(ctx, testEvents(5, 2, day1.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil || fmt.Sprint(seqs(got)) != "[1 2 3 4 5 6]" {
		t.Fatalf("seqs %v (%v), want 1..6", seqs(got), err)
	}
}

// TestFilters selects by commit time and type, at file and at event level.
func TestFilters(t *testing.T) {
	d, _ := openDir(t)
	if err := d.Archive(context.Background(), testEvents(1, 200, day1)); err != nil {
		t.Fatal(err)
	}
	from, to := day1.Add(90*time.Minute), day1.Add(150*time.Minute) // seqs 91..150
	got, err := collect(t, d, archive.Filter{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 60 || got[0].GetSeq() != 91 || got[59].GetSeq() != 150 {
		t.Fatalf("time filter: seqs %v", seqs(got))
	}
	got, err = collect(t, d, archive.Filter{From: from, To: to, Types: []string{"order"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 || got[0].GetSeq() != 92 {
		t.Fatalf("type filter: seqs %v", seqs(got))
	}
	for _, e := range got {
		if e.GetEvent().GetType() != "order" {
			t.Fatalf("type filter let %s through", e.GetEvent().GetType())
		}
	}
	// Only Dec 4 (from 00:00): the Dec 3 files are not listed at all.
	l, err := d.List(context.Background(), archive.Filter{From: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range l.Files {
		if f.Day() != "2026-12-04" {
			t.Errorf("listed %s for a range starting on Dec 4", f.Name)
		}
	}
	if len(l.Files) != 2 {
		t.Errorf("%d files on Dec 4, want 2", len(l.Files))
	}
}

// TestNotOurGzip: a gzip file of something else is refused by its header.
func TestNotOurGzip(t *testing.T) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("hello"))
	zw.Close()
	err := archive.DecodeFile(b.Bytes(), func(*eventv1.CommittedEvent) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not a crossdock archive file") {
		t.Fatalf("got %v", err)
	}
}

// TestReArchiveOtherChunking: a prune replayed by a node whose MaxFileEvents changed
// writes other files for the same events; the reader still yields each event once.
func TestReArchiveOtherChunking(t *testing.T) {
	d, _ := openDir(t)
	evs := testEvents(1, 30, day1)
	d.MaxFileEvents = 7
	if err := d.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	d.MaxFileEvents = 5
	if err := d.Archive(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 {
		t.Fatalf("read seqs %v; want 1..30 once each", seqs(got))
	}
	for i, e := range got {
		if e.GetSeq() != uint64(i+1) {
			t.Fatalf("read seqs %v; want 1..30 once each", seqs(got))
		}
	}
}

// TestArchiveSkipsWhatItHolds: events at or below what the archive holds of their type
// (ArchivedThrough) are not written again when a later call (the prune after an
// archive-ahead, with other batch boundaries) overlaps them, so a reader gets every
// event once; a new Dir on the same directory reads the marks from the manifests.
func TestArchiveSkipsWhatItHolds(t *testing.T) {
	d, root := openDir(t)
	ctx := context.Background()
	all := testEvents(1, 80, day1)
	if err := d.Archive(ctx, all[:50]); err != nil {
		t.Fatal(err)
	}
	if w, err := d.ArchivedThrough(ctx, "inventory.level"); err != nil || w != 49 {
		t.Fatalf("ArchivedThrough(inventory.level) = %d, %v; want 49", w, err)
	}
	if w, _ := d.ArchivedThrough(ctx, "order"); w != 50 {
		t.Fatalf("ArchivedThrough(order) = %d, want 50", w)
	}
	if err := d.Archive(ctx, all[29:]); err != nil { // seqs 30..80: 30..50 held already
		t.Fatal(err)
	}
	l, err := d.List(ctx, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var stored uint64
	for _, f := range l.Files {
		stored += f.Events
	}
	if stored != 80 {
		t.Fatalf("the manifests list %d events after overlapping archives, want 80 (each once): %+v", stored, l.Files)
	}
	got, err := collect(t, d, archive.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range got {
		if ev.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d: duplicated or missing", i, ev.GetSeq())
		}
	}
	d2, err := archive.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := d2.ArchivedThrough(ctx, "order"); err != nil || w != 80 {
		t.Fatalf("reopened: ArchivedThrough(order) = %d, %v; want 80", w, err)
	}
}

// heldStore is a DirStore whose Puts wait until release is closed (a fake for fault
// injection: it holds a write in progress so a test can look at the archive meanwhile).
type heldStore struct {
	archive.DirStore
	entered chan struct{} // closed when a Put is waiting
	release chan struct{} // closed to let it go on
	once    sync.Once
}

func (s *heldStore) Put(ctx context.Context, name string, r io.Reader) error {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.DirStore.Put(ctx, name, r)
}

// TestArchivedThroughDuringAWrite: a prune's Apply asks ArchivedThrough on every node
// while ArchiveAhead may be writing and fsyncing files under the archive's lock; it gets
// the marks from before that write at once, and the new ones after it.
func TestArchivedThroughDuringAWrite(t *testing.T) {
	ctx := context.Background()
	d0, root := openDir(t)
	if err := d0.Archive(ctx, testEvents(1, 10, day1)); err != nil {
		t.Fatal(err)
	}
	st := &heldStore{DirStore: archive.DirStore{Root: root}, entered: make(chan struct{}), release: make(chan struct{})}
	d := archive.New(st)
	before, err := d.ArchivedThrough(ctx, "order") // loads the marks from the manifests
	if err != nil || before != 10 {
		t.Fatalf("ArchivedThrough(order) = %d, %v; want 10", before, err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Archive(ctx, testEvents(11, 10, day1)) }()
	<-st.entered
	got := make(chan uint64, 1)
	go func() {
		w, _ := d.ArchivedThrough(ctx, "order")
		got <- w
	}()
	select {
	case w := <-got:
		if w != before {
			t.Fatalf("during the write ArchivedThrough(order) = %d, want the mark from before it, %d", w, before)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ArchivedThrough waited for the write in progress")
	}
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w, err := d.ArchivedThrough(ctx, "order"); err != nil || w != 20 {
		t.Fatalf("after the write ArchivedThrough(order) = %d, %v; want 20", w, err)
	}
}
