package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// quiet is a logger that drops everything below error.
var quiet = slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError + 1}))

func open(t *testing.T, dir string, quota int64) *Outbox {
	t.Helper()
	o, err := Open(Options{Dir: dir, QuotaBytes: quota, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func closeOK(t *testing.T, o *Outbox) {
	t.Helper()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
}

func recs(prefix string, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		r := []byte(fmt.Sprintf("%s-%d-", prefix, i))
		for len(r) < size {
			r = append(r, byte('a'+len(r)%26))
		}
		out[i] = r
	}
	return out
}

func mustAppend(t *testing.T, o *Outbox, rs [][]byte, pos ...Position) (uint64, uint64) {
	t.Helper()
	first, last, err := o.Append(context.Background(), rs, pos...)
	if err != nil {
		t.Fatal(err)
	}
	return first, last
}

func readAll(t *testing.T, o *Outbox, from uint64) []Entry {
	t.Helper()
	es, err := o.Read(from, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, what, cond)
}

func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0)
	if s := o.Stats(); s != (Stats{QuotaBytes: DefaultQuotaBytes}) {
		t.Fatalf("fresh stats = %+v", s)
	}
	a := recs("a", 10, 100)
	first, last := mustAppend(t, o, a)
	if first != 1 || last != 10 {
		t.Fatalf("first append got %d..%d, want 1..10", first, last)
	}
	b := recs("b", 5, 300)
	first, last = mustAppend(t, o, b)
	if first != 11 || last != 15 {
		t.Fatalf("second append got %d..%d, want 11..15", first, last)
	}
	all := append(append([][]byte{}, a...), b...)
	check := func(es []Entry, from uint64) {
		t.Helper()
		for i, e := range es {
			if e.Seq != from+uint64(i) || !bytes.Equal(e.Data, all[e.Seq-1]) {
				t.Fatalf("entry %d = seq %d %q, want seq %d %q", i, e.Seq, e.Data, from+uint64(i), all[from+uint64(i)-1])
			}
		}
	}
	es := readAll(t, o, 1)
	if len(es) != 15 {
		t.Fatalf("read %d entries, want 15", len(es))
	}
	check(es, 1)

	// Cursor reads with count and byte limits.
	es, _ = o.Read(4, 3, 0)
	if len(es) != 3 {
		t.Fatalf("Read(4, 3, 0) returned %d entries", len(es))
	}
	check(es, 4)
	es, _ = o.Read(9, 0, 250) // 100 + 100 fit, the 300-byte seq 11 does not
	if len(es) != 2 {
		t.Fatalf("Read(9, 0, 250) returned %d entries", len(es))
	}
	check(es, 9)
	es, _ = o.Read(11, 0, 10) // bigger than maxBytes: still one entry
	if len(es) != 1 {
		t.Fatalf("Read(11, 0, 10) returned %d entries, want 1", len(es))
	}
	check(es, 11)
	if es, _ := o.Read(16, 0, 0); len(es) != 0 {
		t.Fatalf("Read past the end returned %d entries", len(es))
	}

	s := o.Stats()
	want := Stats{FirstSeq: 1, LastSeq: 15, PendingEvents: 15, PendingBytes: 10*100 + 5*300, QuotaBytes: DefaultQuotaBytes}
	if s != want {
		t.Fatalf("stats = %+v, want %+v", s, want)
	}

	// Ack deletes; re-acking or acking lower is a no-op.
	if err := o.Ack(12); err != nil {
		t.Fatal(err)
	}
	for _, up := range []uint64{12, 3, 0} {
		if err := o.Ack(up); err != nil {
			t.Fatal(err)
		}
	}
	es = readAll(t, o, 1)
	if len(es) != 3 || es[0].Seq != 13 {
		t.Fatalf("after Ack(12) read %d entries from seq %v", len(es), es)
	}
	check(es, 13)
	s = o.Stats()
	want = Stats{FirstSeq: 13, LastSeq: 15, AckedSeq: 12, PendingEvents: 3, PendingBytes: 900, QuotaBytes: DefaultQuotaBytes}
	if s != want {
		t.Fatalf("stats after ack = %+v, want %+v", s, want)
	}
	closeOK(t, o)

	// Reopen: the mark, the pending entries and the numbering survive.
	o = open(t, dir, 0)
	if s := o.Stats(); s != want {
		t.Fatalf("stats after reopen = %+v, want %+v", s, want)
	}
	check(readAll(t, o, 0), 13)
	first, last = mustAppend(t, o, recs("c", 2, 10))
	if first != 16 || last != 17 {
		t.Fatalf("append after reopen got %d..%d, want 16..17", first, last)
	}
	// Ack everything, reopen: seqs are never reused.
	if err := o.Ack(17); err != nil {
		t.Fatal(err)
	}
	want = Stats{LastSeq: 17, AckedSeq: 17, QuotaBytes: DefaultQuotaBytes}
	if s := o.Stats(); s != want {
		t.Fatalf("stats after acking all = %+v, want %+v", s, want)
	}
	closeOK(t, o)
	o = open(t, dir, 0)
	defer closeOK(t, o)
	if s := o.Stats(); s != want {
		t.Fatalf("stats after reopen = %+v, want %+v", s, want)
	}
	if es := readAll(t, o, 1); len(es) != 0 {
		t.Fatalf("read %d entries after acking all", len(es))
	}
	first, last = mustAppend(t, o, recs("d", 1, 10))
	if first != 18 || last != 18 {
		t.Fatalf("append after ack-all + reopen got %d..%d, want 18..18", first, last)
	}
}

func TestAckLargeRangeAndClamp(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	const n = 9000 // several Ack chunks
	for i := 0; i < n; i += 1000 {
		mustAppend(t, o, recs("x", 1000, 40))
	}
	if err := o.Ack(n - 5); err != nil {
		t.Fatal(err)
	}
	es := readAll(t, o, 0)
	if len(es) != 5 || es[0].Seq != n-4 {
		t.Fatalf("after Ack(%d): %d entries, first %d", n-5, len(es), es[0].Seq)
	}
	if s := o.Stats(); s.PendingEvents != 5 || s.PendingBytes != 5*40 || s.AckedSeq != n-5 {
		t.Fatalf("stats = %+v", s)
	}
	// Acking beyond the last committed seq acks what exists and no more.
	if err := o.Ack(n + 100); err != nil {
		t.Fatal(err)
	}
	if s := o.Stats(); s.AckedSeq != n || s.PendingEvents != 0 || s.PendingBytes != 0 {
		t.Fatalf("stats after clamped ack = %+v", s)
	}
	if first, _ := mustAppend(t, o, recs("y", 1, 1)); first != n+1 {
		t.Fatalf("next seq = %d, want %d", first, n+1)
	}
}

func TestPositions(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0)
	if _, ok, err := o.Position("erp"); ok || err != nil {
		t.Fatalf("Position on empty outbox = %v, %v", ok, err)
	}
	mustAppend(t, o, recs("a", 2, 10), Position{"erp", "lsn-1"}, Position{"wms", "w-7"})
	mustAppend(t, o, recs("b", 1, 10), Position{"erp", "lsn-2"})
	// Positions only: no seqs used.
	first, last, err := o.Append(context.Background(), nil, Position{"wms", "w-8"})
	if err != nil || first != 0 || last != 0 {
		t.Fatalf("positions-only append = %d, %d, %v", first, last, err)
	}
	if first, last, err := o.Append(context.Background(), nil); err != nil || first != 0 || last != 0 {
		t.Fatalf("empty append = %d, %d, %v", first, last, err)
	}
	closeOK(t, o)
	o = open(t, dir, 0)
	defer closeOK(t, o)
	for name, want := range map[string]string{"erp": "lsn-2", "wms": "w-8"} {
		got, ok, err := o.Position(name)
		if err != nil || !ok || got != want {
			t.Fatalf("Position(%q) = %q, %v, %v; want %q", name, got, ok, err, want)
		}
	}
	if first, _ := mustAppend(t, o, recs("c", 1, 10)); first != 4 {
		t.Fatalf("next seq = %d, want 4", first)
	}
}

func TestQuotaBackPressure(t *testing.T) {
	o := open(t, t.TempDir(), 1000)
	defer closeOK(t, o)
	ctx := context.Background()

	// A batch bigger than the whole quota fails at once.
	if _, _, err := o.Append(ctx, recs("big", 11, 100)); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("oversize batch: err = %v, want ErrBatchTooLarge", err)
	}
	mustAppend(t, o, recs("a", 8, 100)) // 800 of 1000 bytes

	// A batch that does not fit waits until its context ends.
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, _, err := o.Append(tctx, recs("late", 3, 100))
	cancel()
	if !errors.Is(err, ErrQuotaFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append on full quota: err = %v, want ErrQuotaFull and DeadlineExceeded", err)
	}
	if s := o.Stats(); s.Blocked || s.BlockedReason != "" || !s.BlockedSince.IsZero() {
		t.Fatalf("stats after the waiter gave up = %+v", s)
	}

	// A blocked producer shows in Stats and proceeds after Ack.
	type result struct {
		first, last uint64
		err         error
	}
	b := recs("b", 3, 100)
	done := make(chan result, 1)
	go func() {
		f, l, err := o.Append(ctx, b)
		done <- result{f, l, err}
	}()
	waitFor(t, "producer to block", func() bool { return o.Stats().Blocked })
	s := o.Stats()
	if !strings.Contains(s.BlockedReason, "outbox full: 800 of 1000 bytes pending") ||
		!strings.Contains(s.BlockedReason, "waiting for the control plane to acknowledge") ||
		s.BlockedSince.IsZero() {
		t.Fatalf("blocked stats = %+v", s)
	}
	// A second producer queues behind the first (FIFO) even though it would fit.
	small := make(chan result, 1)
	go func() {
		f, l, err := o.Append(ctx, recs("s", 1, 100))
		small <- result{f, l, err}
	}()
	waitFor(t, "second producer to queue", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.waitq) == 2
	})
	select {
	case r := <-small:
		t.Fatalf("small batch overtook the blocked one: %+v", r)
	case r := <-done:
		t.Fatalf("blocked append returned before Ack: %+v", r)
	default:
	}
	if err := o.Ack(1); err != nil { // 700 pending: the 300-byte batch fits exactly
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.first != 9 || r.last != 11 {
		t.Fatalf("unblocked append = %+v, want 9..11", r)
	}
	// The quota is full again, so the small batch still waits.
	if s := o.Stats(); !s.Blocked || !strings.Contains(s.BlockedReason, "1000 of 1000 bytes pending") {
		t.Fatalf("stats with the small batch waiting = %+v", s)
	}
	if err := o.Ack(3); err != nil {
		t.Fatal(err)
	}
	rs := <-small
	if rs.err != nil || rs.first != 12 {
		t.Fatalf("queued small append = %+v, want seq 12", rs)
	}
	waitFor(t, "blocked to clear", func() bool { return !o.Stats().Blocked })
	// Nothing dropped: 4..12 are all there.
	es := readAll(t, o, 0)
	if len(es) != 9 || es[0].Seq != 4 || es[8].Seq != 12 {
		t.Fatalf("read %d entries: %v", len(es), es)
	}
	if !bytes.Equal(es[5].Data, b[0]) {
		t.Fatalf("seq 9 = %q, want %q", es[5].Data, b[0])
	}
	if s := o.Stats(); s.PendingBytes != 900 || s.PendingEvents != 9 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestBatchLimits(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	ctx := context.Background()
	first, last, err := o.Append(ctx, recs("max", MaxBatchRecords-1, 8), Position{"p", "v"})
	if err != nil || last-first+1 != MaxBatchRecords-1 {
		t.Fatalf("append of MaxBatchRecords entries: %d..%d, %v", first, last, err)
	}
	first, last, err = o.Append(ctx, recs("max", MaxBatchRecords, 300))
	if err != nil || last-first+1 != MaxBatchRecords {
		t.Fatalf("append of MaxBatchRecords records: %d..%d, %v", first, last, err)
	}
	if _, _, err := o.Append(ctx, recs("over", MaxBatchRecords+1, 8)); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("append of MaxBatchRecords+1: err = %v, want ErrBatchTooLarge", err)
	}
	if _, _, err := o.Append(ctx, [][]byte{make([]byte, MaxRecordBytes+1)}); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("append of a record over MaxRecordBytes: err = %v, want ErrBatchTooLarge", err)
	}
	big := bytes.Repeat([]byte("z"), 1<<20)
	if _, _, err := o.Append(ctx, [][]byte{big}); err != nil {
		t.Fatalf("append of a 1 MiB record: %v", err)
	}
	es, err := o.Read(last+1, 1, 1)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, big) {
		t.Fatalf("read of the 1 MiB record: %d entries, %v", len(es), err)
	}
}

func TestConcurrentAppendersAndReader(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	const writers, appends = 6, 60
	type span struct{ first, last uint64 }
	spans := make([][]span, writers)
	var wg sync.WaitGroup
	total := uint64(0)
	for w := range writers {
		n := 1 + w*7 // batch sizes 1, 8, 15, ...
		total += uint64(appends * n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appends {
				f, l, err := o.Append(context.Background(), recs(fmt.Sprintf("w%d/%d", w, i), n, 20))
				if err != nil {
					t.Error(err)
					return
				}
				if l-f+1 != uint64(n) {
					t.Errorf("writer %d got %d..%d for %d records", w, f, l, n)
				}
				spans[w] = append(spans[w], span{f, l})
			}
		}()
	}

	// A reader follows the writers with Notify and checks it never sees a gap.
	readerDone := make(chan error, 1)
	go func() {
		next := uint64(1)
		for next <= total {
			ch := o.Notify()
			es, err := o.Read(next, 100, 0)
			if err != nil {
				readerDone <- err
				return
			}
			if len(es) == 0 {
				select {
				case <-ch:
				case <-time.After(10 * time.Second):
					readerDone <- fmt.Errorf("no notification after seq %d", next-1)
					return
				}
				continue
			}
			for _, e := range es {
				if e.Seq != next {
					readerDone <- fmt.Errorf("reader saw seq %d, want %d", e.Seq, next)
					return
				}
				next++
			}
			if err := o.Ack(next - 1); err != nil {
				readerDone <- err
				return
			}
		}
		readerDone <- nil
	}()
	wg.Wait()
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	if s := o.Stats(); s.LastSeq != total || s.AckedSeq != total || s.PendingEvents != 0 || s.PendingBytes != 0 {
		t.Fatalf("stats = %+v, want all %d acked", s, total)
	}
	// Every seq was handed out exactly once, and in order per writer.
	seen := make([]bool, total+1)
	for w, ss := range spans {
		for i, s := range ss {
			if i > 0 && s.first <= ss[i-1].last {
				t.Fatalf("writer %d: span %v not after %v", w, s, ss[i-1])
			}
			for q := s.first; q <= s.last; q++ {
				if q == 0 || q > total || seen[q] {
					t.Fatalf("seq %d handed out twice or out of range", q)
				}
				seen[q] = true
			}
		}
	}
}

func TestConcurrentAppendersData(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	const writers, appends, n = 4, 40, 10
	type batch struct {
		first uint64
		recs  [][]byte
	}
	var mu sync.Mutex
	var batches []batch
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range appends {
				rs := recs(fmt.Sprintf("w%d/%d", w, i), n, 10+i)
				f, _, err := o.Append(context.Background(), rs)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				batches = append(batches, batch{f, rs})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	es := readAll(t, o, 1)
	if len(es) != writers*appends*n {
		t.Fatalf("read %d entries, want %d", len(es), writers*appends*n)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
	}
	for _, b := range batches {
		for j, r := range b.recs {
			if got := es[b.first-1+uint64(j)].Data; !bytes.Equal(got, r) {
				t.Fatalf("seq %d = %q, want %q", b.first+uint64(j), got, r)
			}
		}
	}
}

func TestNotify(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	ch := o.Notify()
	select {
	case <-ch:
		t.Fatal("Notify channel closed before any append")
	default:
	}
	mustAppend(t, o, recs("a", 1, 1))
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify channel not closed after an append")
	}
	ch = o.Notify()
	select {
	case <-ch:
		t.Fatal("fresh Notify channel already closed")
	default:
	}
	closeOK(t, o)
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify channel not closed by Close")
	}
	<-o.Notify() // closed after Close
}

func TestClose(t *testing.T) {
	o := open(t, t.TempDir(), 100)
	mustAppend(t, o, recs("a", 1, 100))
	blocked := make(chan error, 1)
	go func() {
		_, _, err := o.Append(context.Background(), recs("b", 1, 50))
		blocked <- err
	}()
	waitFor(t, "producer to block", func() bool { return o.Stats().Blocked })
	closeOK(t, o)
	if err := <-blocked; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked append after Close: err = %v, want ErrClosed", err)
	}
	if _, _, err := o.Append(context.Background(), recs("c", 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := o.Read(1, 1, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := o.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	if _, _, err := o.Position("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Position after Close: %v", err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = o.Stats()
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: t.TempDir(), QuotaBytes: -1}); err == nil {
		t.Fatal("Open with a negative quota succeeded")
	}
	dir := t.TempDir()
	o := open(t, dir, 0)
	defer closeOK(t, o)
	if o2, err := Open(Options{Dir: dir, Logger: quiet}); err == nil {
		o2.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
}

// capture is a slog handler that records messages by component.
type capture struct {
	mu    sync.Mutex
	attrs []slog.Attr
	recs  []string
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	comp := ""
	for _, a := range c.attrs {
		if a.Key == "component" {
			comp = a.Value.String()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, fmt.Sprintf("%s %s %s", r.Level, comp, r.Message))
	return nil
}
func (c *capture) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureChild{c, append(append([]slog.Attr{}, c.attrs...), as...)}
}
func (c *capture) WithGroup(string) slog.Handler { return c }

type captureChild struct {
	root  *capture
	attrs []slog.Attr
}

func (c *captureChild) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureChild) Handle(ctx context.Context, r slog.Record) error {
	comp := ""
	for _, a := range c.attrs {
		if a.Key == "component" {
			comp = a.Value.String()
		}
	}
	c.root.mu.Lock()
	defer c.root.mu.Unlock()
	c.root.recs = append(c.root.recs, fmt.Sprintf("%s %s %s", r.Level, comp, r.Message))
	return nil
}
func (c *captureChild) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureChild{c.root, append(append([]slog.Attr{}, c.attrs...), as...)}
}
func (c *captureChild) WithGroup(string) slog.Handler { return c }

func TestBadgerLogsGoToSlog(t *testing.T) {
	h := &capture{}
	o, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, o, recs("a", 1, 100))
	closeOK(t, o)
	h.mu.Lock()
	defer h.mu.Unlock()
	var badgerDebug, badgerInfo bool
	for _, r := range h.recs {
		badgerDebug = badgerDebug || strings.HasPrefix(r, "DEBUG outbox.badger ")
		badgerInfo = badgerInfo || strings.HasPrefix(r, "INFO outbox.badger ")
	}
	if !badgerDebug || badgerInfo {
		t.Fatalf("badger logs (want debug lines, no info lines): %q", h.recs)
	}

	// A value-log fsync failure, which Badger only logs, fails the outbox.
	o2 := open(t, t.TempDir(), 0)
	defer closeOK(t, o2)
	badgerLogger{l: quiet, onSyncError: o2.valueLogSyncFailed}.Errorf("Error while curlf sync: %v\n", errors.New("EIO"))
	if _, _, err := o2.Append(context.Background(), recs("a", 1, 1)); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("append after a value-log sync failure: err = %v", err)
	}
	if s := o2.Stats(); !s.Blocked || !strings.Contains(s.BlockedReason, "fsync failed") {
		t.Fatalf("stats after a value-log sync failure = %+v", s)
	}
}

// TestPublishStopsAtFailedBatch checks that readers never see past a failed batch,
// and that a value-log sync failure poisons the batches in flight.
func TestPublishStopsAtFailedBatch(t *testing.T) {
	o := open(t, t.TempDir(), 0)
	defer closeOK(t, o)
	a := &batch{first: 1, last: 2, bytes: 20}
	b := &batch{first: 3, last: 4, bytes: 20}
	c := &batch{first: 5, last: 6, bytes: 20}
	o.mu.Lock()
	o.inflight = []*batch{a, b, c}
	o.reserved = 60
	c.done = true
	o.publishLocked()
	if o.readable != 0 {
		t.Fatalf("published %d before the head completed", o.readable)
	}
	a.done = true
	o.mu.Unlock()
	o.valueLogSyncFailed("EIO") // b is still in flight: poisoned
	o.mu.Lock()
	if a.poisoned || !b.poisoned || c.poisoned {
		t.Fatalf("poisoned: a %v b %v c %v, want only b", a.poisoned, b.poisoned, c.poisoned)
	}
	b.done = true
	o.publishLocked()
	readable, reserved, pending, inflight := o.readable, o.reserved, o.pendingEvents, len(o.inflight)
	o.mu.Unlock()
	if readable != 2 || pending != 2 || reserved != 0 || inflight != 0 {
		t.Fatalf("readable %d, pending %d, reserved %d, inflight %d; want 2, 2, 0, 0", readable, pending, reserved, inflight)
	}
}
