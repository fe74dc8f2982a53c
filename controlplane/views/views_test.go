package views

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// t0 is the leader append time of entry 1; entry i is appended i seconds later.
var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// testLog applies ingest batches to a real (in-memory) ledger at consecutive indexes.
type testLog struct {
	t     testing.TB
	l     *ledger.Ledger
	index uint64
	aseq  uint64
}

func newTestLog(t testing.TB, disk bool) *testLog {
	t.Helper()
	opts := ledger.Options{InMemory: !disk}
	if disk {
		opts.Dir = t.TempDir()
	}
	l, err := ledger.Open(opts)
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return &testLog{t: t, l: l}
}

func (tl *testLog) at(index uint64) time.Time { return t0.Add(time.Duration(index) * time.Second) }

// ingest commits evs as one entry and returns the seq of the last one.
func (tl *testLog) ingest(evs ...*eventv1.Event) uint64 {
	tl.t.Helper()
	b := &storev1.IngestBatch{AgentId: "a1"}
	for _, ev := range evs {
		tl.aseq++
		ev.Id = fmt.Sprintf("ev-%d", tl.aseq)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: tl.aseq, Event: ev})
	}
	p, err := proto.Marshal(b)
	if err != nil {
		tl.t.Fatal(err)
	}
	tl.index++
	res, err := tl.l.Apply(tl.index, tl.at(tl.index), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: p})
	if err != nil {
		tl.t.Fatalf("apply: %v", err)
	}
	r := res.(*storev1.IngestResult)
	if int(r.GetCommitted()) != len(evs) {
		tl.t.Fatalf("committed %d of %d events: %v", r.GetCommitted(), len(evs), r)
	}
	return tl.l.LastSeq()
}

func lvl(sku, loc, onHand string, occurred time.Time) *eventv1.Event {
	return &eventv1.Event{Type: "inventory.level", OccurredAt: ts(occurred),
		Keys:    map[string]string{"sku": sku, "location": loc},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: loc, OnHand: onHand, Allocated: "1", Available: onHand + "0", UnitOfMeasure: "EA"}}}
}

func prc(sku, list, amount string, from, to time.Time) *eventv1.Event {
	return &eventv1.Event{Type: "price", Keys: map[string]string{"sku": sku},
		Payload: &eventv1.Event_Price{Price: &eventv1.Price{Sku: sku, PriceList: list, Currency: "EUR", Amount: amount, ValidFrom: ts(from), ValidTo: ts(to)}}}
}

func itm(sku, name string) *eventv1.Event {
	return &eventv1.Event{Type: "item", Keys: map[string]string{"sku": sku},
		Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: sku, Name: name, Description: "d " + name, UnitOfMeasure: "EA", Gtin: "0400"}}}
}

func order(n string) *eventv1.Event {
	return &eventv1.Event{Type: "order", Keys: map[string]string{"order": n},
		Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: n, Currency: "EUR", Total: "1"}}}
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// start runs views over tl's ledger until the test ends.
func start(t testing.TB, tl *testLog, opts Options) *Views {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v := New(LedgerSource{L: tl.l}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return v
}

func waitSeq(t testing.TB, v *Views, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

func TestLevelsReplacePerKeyAndOlderNeverOverwrites(t *testing.T) {
	tl := newTestLog(t, false)
	v := start(t, tl, Options{})
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tl.ingest(lvl("A", "WH1", "10", base), lvl("A", "WH2", "20", base), order("O1"))
	seq := tl.ingest(lvl("A", "WH1", "11", base.Add(time.Minute)), lvl("B", "WH1", "5", base))
	waitSeq(t, v, seq)
	got := v.Levels([]string{"A", "B", "nope"}, nil)
	want := []string{"A WH1 11 1 110 EA 4", "A WH2 20 1 200 EA 2", "B WH1 5 1 50 EA 5"}
	checkLevels(t, got, want)
	if !got[0].At.Equal(tl.at(2)) {
		t.Errorf("A@WH1 at %v, want the commit time of its entry %v", got[0].At, tl.at(2))
	}
	// An event that occurred before the held one (a late re-send) changes nothing; one
	// at the same time replaces it (the later seq wins).
	tl.ingest(lvl("A", "WH1", "9", base))
	seq = tl.ingest(lvl("A", "WH2", "21", base))
	waitSeq(t, v, seq)
	checkLevels(t, v.Levels([]string{"A"}, nil), []string{"A WH1 11 1 110 EA 4", "A WH2 21 1 210 EA 7"})
	checkLevels(t, v.Levels([]string{"A"}, []string{"WH2", "WH9"}), []string{"A WH2 21 1 210 EA 7"})
	// Quantities too long to sit in the entry, then short again.
	long := lvl("A", "WH2", "1234567890.123456789", base.Add(time.Hour))
	seq = tl.ingest(long)
	waitSeq(t, v, seq)
	checkLevels(t, v.Levels([]string{"A"}, []string{"WH2"}), []string{"A WH2 1234567890.123456789 1 1234567890.1234567890 EA 8"})
	seq = tl.ingest(lvl("A", "WH2", "5", base.Add(2*time.Hour)))
	waitSeq(t, v, seq)
	checkLevels(t, v.Levels([]string{"A"}, []string{"WH2"}), []string{"A WH2 5 1 50 EA 9"})
	if unsafe.Sizeof(level{}) != 64 {
		t.Errorf("a level takes %d bytes, want 64", unsafe.Sizeof(level{}))
	}
	if n := v.Stats().Levels; n != 3 {
		t.Errorf("Stats().Levels = %d, want 3", n)
	}
}

func checkLevels(t testing.TB, got []Level, want []string) {
	t.Helper()
	var s []string
	for _, l := range got {
		s = append(s, fmt.Sprintf("%s %s %s %s %s %s %d", l.SKU, l.Location, l.OnHand, l.Allocated, l.Available, l.UnitOfMeasure, l.Seq))
	}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Fatalf("levels:\n got %q\nwant %q", s, want)
	}
}

func TestPricesByValidity(t *testing.T) {
	tl := newTestLog(t, false)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	v := start(t, tl, Options{Now: func() time.Time { return now }})
	day := 24 * time.Hour
	tl.ingest(
		prc("A", "retail", "10.00", time.Time{}, time.Time{}),                     // open: valid unless a later-starting one is
		prc("A", "retail", "9.00", now.Add(-10*day), now.Add(10*day)),             // valid now, starts later: served
		prc("A", "retail", "8.00", now.Add(day), time.Time{}),                     // not yet valid
		prc("A", "dealer", "7.00", time.Time{}, time.Time{}),                      // another list
		prc("B", "retail", "5.00", now.Add(-10*day), now.Add(-day)),               // ended
		prc("C", "retail", "3.00", time.Time{}, time.Time{}),                      // replaced below
		prc("C", "retail", "3.50", time.Time{}, time.Time{}),                      // same (sku, list, valid_from): replaces
		prc("D", "retail", "1.00", now.Add(-day), now.Add(-day).Add(time.Second)), // ended
	)
	seq := tl.l.LastSeq()
	waitSeq(t, v, seq)
	var got []string
	for _, p := range v.Prices([]string{"A", "B", "C", "D"}, "retail") {
		got = append(got, fmt.Sprintf("%s %s %s %s %d", p.SKU, p.PriceList, p.Amount, p.Currency, p.Seq))
	}
	want := []string{"A retail 9.00 EUR 2", "C retail 3.50 EUR 7"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("prices now:\n got %q\nwant %q", got, want)
	}
	if p := v.Prices([]string{"A"}, "dealer"); len(p) != 1 || p[0].Amount != "7.00" {
		t.Errorf("dealer prices = %+v", p)
	}
	// Eleven days on: the 9.00 window has ended, the 8.00 one started.
	now = now.Add(11 * day)
	if p := v.Prices([]string{"A"}, "retail"); len(p) != 1 || p[0].Amount != "8.00" || !p[0].ValidFrom.Equal(time.Date(2026, 6, 2, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("prices 11 days on = %+v, want 8.00 from 2026-06-02", p)
	}
	if p := v.Prices([]string{"A"}, "unknown"); len(p) != 0 {
		t.Errorf("unknown list = %+v", p)
	}
}

func TestItemsPaging(t *testing.T) {
	tl := newTestLog(t, false)
	v := start(t, tl, Options{})
	var evs []*eventv1.Event
	for _, sku := range []string{"S05", "S01", "S03", "S02", "S04"} {
		evs = append(evs, itm(sku, "name "+sku))
	}
	tl.ingest(evs...)
	waitSeq(t, v, tl.l.LastSeq())
	page, next := v.Items("", 2, nil)
	if skus(page) != "[S01 S02]" || next != "S02" {
		t.Fatalf("page 1 = %s next %q", skus(page), next)
	}
	// A new item between pages lands in order.
	seq := tl.ingest(itm("S025", "late"), itm("S01", "renamed"))
	waitSeq(t, v, seq)
	page, next = v.Items(next, 2, nil)
	if skus(page) != "[S025 S03]" || next != "S03" {
		t.Fatalf("page 2 = %s next %q", skus(page), next)
	}
	page, next = v.Items(next, 2, nil)
	if skus(page) != "[S04 S05]" || next != "" {
		t.Fatalf("page 3 = %s next %q", skus(page), next)
	}
	odd := func(s string) bool { return s[len(s)-1]%2 == 1 }
	page, next = v.Items("", 10, odd)
	if skus(page) != "[S01 S025 S03 S05]" || next != "" {
		t.Fatalf("matched = %s next %q", skus(page), next)
	}
	if page[0].Name != "renamed" || page[0].UnitOfMeasure != "EA" || page[0].GTIN != "0400" || page[0].Seq != 7 {
		t.Errorf("S01 = %+v", page[0])
	}
}

func skus(items []ItemEntry) string {
	var s []string
	for _, it := range items {
		s = append(s, it.SKU)
	}
	return fmt.Sprint(s)
}

// TestRebuildEqualsLive builds new views over a ledger the live ones followed event
// by event: the same state.
func TestRebuildEqualsLive(t *testing.T) {
	tl := newTestLog(t, true)
	live := start(t, tl, Options{Batch: 7})
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 40 {
		tl.ingest(lvl(fmt.Sprintf("S%d", i%9), fmt.Sprintf("WH%d", i%4), fmt.Sprint(i), base.Add(time.Duration(i%5)*time.Minute)),
			prc(fmt.Sprintf("S%d", i%9), "retail", fmt.Sprint(i), base.Add(time.Duration(i%3)*time.Hour), time.Time{}),
			order(fmt.Sprint(i)), itm(fmt.Sprintf("S%d", i%11), fmt.Sprint(i)))
		if i%10 == 0 {
			waitSeq(t, live, tl.l.LastSeq())
		}
	}
	waitSeq(t, live, tl.l.LastSeq())
	rebuilt := start(t, tl, Options{Batch: 5}) // several chunks per read: reads stop at chunk ends
	waitSeq(t, rebuilt, tl.l.LastSeq())
	if ok, diff := Equal(live, rebuilt); !ok {
		t.Fatalf("rebuilt views differ from live ones: %s", diff)
	}
	testutil.WaitFor(t, 5*time.Second, "rebuild figures", func() bool { return rebuilt.Stats().Rebuild > 0 })
	if st := rebuilt.Stats(); st.RebuildEvents != 160 || st.Levels != 36 || st.Items != 11 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWaitForHonoursContext(t *testing.T) {
	tl := newTestLog(t, false)
	v := start(t, tl, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := v.WaitFor(ctx, 5); err == nil {
		t.Fatal("WaitFor(5) on an empty ledger returned nil")
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- v.WaitFor(ctx, 2)
	}()
	tl.ingest(order("1"), lvl("A", "W", "1", time.Time{}))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v.Seq() < 2 {
		t.Fatalf("Seq = %d after WaitFor(2)", v.Seq())
	}
}

// gatedSource is a LedgerSource whose reads wait while the gate is closed: fault
// injection, to hold the views back while the ledger moves on.
type gatedSource struct {
	LedgerSource
	testutil.Gate
}

func (g *gatedSource) ScanRaw(from uint64, max int, fn func(ev ledger.RawEvent) error) (uint64, error) {
	g.Wait()
	return g.LedgerSource.ScanRaw(from, max, fn)
}

// TestPruneOvertakesViews: views held back while a prune removes events they have not
// read merge the compacted base and go on from the low-water mark, rather than
// rebuilding from it (which, on a busy node, lost the race with the next prune step
// again and again: the soak of 2026-12-05), and end equal to views built afresh.
func TestPruneOvertakesViews(t *testing.T) {
	tl := newTestLog(t, true)
	src := &gatedSource{LedgerSource: LedgerSource{L: tl.l}}
	v := New(src, Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	batch := func(keys int) { // one entry of 1,000 levels over the first keys of 9 SKUs × 4 locations
		evs := make([]*eventv1.Event, 1000)
		for i := range evs {
			k := n % keys
			evs[i] = lvl(fmt.Sprintf("S%d", k%9), fmt.Sprintf("WH%d", k/9), fmt.Sprint(n), base.Add(time.Duration(n)*time.Second))
			n++
		}
		tl.ingest(evs...)
	}
	for range 5 {
		batch(36)
	}
	waitSeq(t, v, tl.l.LastSeq())
	src.Close()
	for range 30 { // past the key index flush (a prune never passes it)
		batch(36)
	}
	cut := tl.l.LastSeq() - 2000
	m, err := proto.Marshal(&storev1.PruneLedger{DefaultBelow: cut, Compact: []string{"inventory.level", "price", "item"}})
	if err != nil {
		t.Fatal(err)
	}
	for more := true; more; {
		tl.index++
		res, err := tl.l.Apply(tl.index, tl.at(tl.index), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, Payload: m})
		if err != nil || res.(*storev1.PruneResult).GetError() != "" {
			t.Fatalf("prune: %v %v", res, err)
		}
		more = res.(*storev1.PruneResult).GetMore()
	}
	if low, _ := tl.l.LowWater(); low <= v.Seq()+1 {
		t.Fatalf("low-water %d: the prune did not pass the views (at %d)", low, v.Seq())
	}
	batch(20) // some keys change after the mark, others keep their pruned newest event
	src.Open()
	waitSeq(t, v, tl.l.LastSeq())
	if v.Merges() == 0 {
		t.Fatal("the views did not merge the compacted base")
	}
	fresh := start(t, tl, Options{})
	waitSeq(t, fresh, tl.l.LastSeq())
	if ok, diff := Equal(v, fresh); !ok {
		t.Fatalf("views that merged the base differ from views built afresh: %s", diff)
	}
	if got := len(v.Levels([]string{"S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}, nil)); got != 36 {
		t.Fatalf("%d levels, want 36", got)
	}
}

// lateSource reports a LastSeq behind what its reads return: fault injection for the
// moment after an Apply commits, when its events are readable and LastSeq has not moved
// yet.
type lateSource struct{ LedgerSource }

func (s lateSource) LastSeq() uint64 { return s.L.LastSeq() - min(s.L.LastSeq(), 3) }

// TestViewsRebuildOnlyAfterRestore: LastSeq behind what the views read does not make
// them start over (it made every node rebuild its views every few minutes under load),
// and a snapshot restored into the ledger does: the views then equal views built afresh
// from the restored ledger.
func TestViewsRebuildOnlyAfterRestore(t *testing.T) {
	tl := newTestLog(t, true)
	var logs testutil.LogBuffer
	v := New(lateSource{LedgerSource{L: tl.l}}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		tl.ingest(lvl("S1", "WH1", fmt.Sprint(i), base.Add(time.Duration(i)*time.Minute)), lvl(fmt.Sprintf("S%d", i), "WH2", "1", base))
		waitSeq(t, v, tl.l.LastSeq())
	}
	if strings.Contains(logs.String(), "stopped following") {
		t.Fatalf("the views started over without a restore:\n%s", logs.String())
	}

	// A snapshot of another ledger restored into this one.
	other := newTestLog(t, true)
	other.ingest(lvl("S1", "WH1", "777", base.Add(time.Hour)), lvl("X9", "WH3", "5", base))
	snap, err := other.l.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := snap.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if err := tl.l.Restore(&b); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "views rebuilt from the restored ledger", func() bool {
		got := v.Levels([]string{"S1", "X9", "S5"}, nil)
		return len(got) == 2 && got[0].OnHand == "777" && got[1].SKU == "X9"
	})
	if !strings.Contains(logs.String(), "a snapshot was restored") {
		t.Fatalf("no rebuild logged after the restore:\n%s", logs.String())
	}
}
