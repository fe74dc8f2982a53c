package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// TestLogBoundedInBytes: with entry counts that a few hundred entries never reach, the
// log is still snapshotted and truncated once it holds more than its byte bound, and
// TrailingLogs is lowered to what fits in TrailingBytes; bounded in entries only, the
// same load takes no snapshot. One real store on raft-wal.
func TestLogBoundedInBytes(t *testing.T) {
	run := func(trailingBytes, snapshotBytes int64) *Store {
		cfg := testConfig(t, t.TempDir())
		cfg.WALSegmentSize = 64 << 10
		cfg.TrailingBytes, cfg.SnapshotBytes = trailingBytes, snapshotBytes
		s := mustOpen(t, cfg)
		t.Cleanup(func() { s.Close() })
		for i := range 200 { // about 2.4 MiB of entries of 100 events
			ingest(t, s, batch("a1", 1+i*100, 100))
		}
		return s
	}

	s := run(256<<10, 512<<10)
	// What the bound guarantees: the trailing entries kept before the newest snapshot
	// (what 256 KiB holds, but never fewer than minTrailingLogs entries: 64 of these
	// ~12 KiB entries are more than 256 KiB), the entries after it (a snapshot is due
	// over 512 KiB), and raft-wal truncating whole 64 KiB segments. A snapshot taken
	// while the load still ran leaves up to 512 KiB after it, with no later one due.
	s.logSize.mu.Lock()
	last := s.logSize.lastMark()
	s.logSize.mu.Unlock()
	perEntry := last.bytes / last.index
	bound := max(uint64(256<<10), minTrailingLogs*perEntry) + 512<<10 + 64<<10
	testutil.WaitForDetail(t, 30*time.Second, 50*time.Millisecond, "the log back under its byte bound after a snapshot", func() (bool, string) {
		snaps, err := s.snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		return len(snaps) > 0 && s.logSize.total() <= bound && !s.fsm.snapshotting(),
			fmt.Sprintf("%d snapshots, %d bytes in the log", len(snaps), s.logSize.total())
	})
	first, err := s.wal.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Fatalf("first log index %d after a snapshot: nothing truncated", first)
	}
	if rc := s.Raft().ReloadableConfig(); rc.TrailingLogs >= DefaultTrailingLogs || rc.TrailingLogs < minTrailingLogs {
		t.Fatalf("trailing logs %d: want lowered from %d to what 256 KiB holds, at least %d", rc.TrailingLogs, DefaultTrailingLogs, minTrailingLogs)
	}

	s = run(-1, -1)
	if snaps, err := s.snaps.List(); err != nil || len(snaps) != 0 {
		t.Fatalf("bounded in entries only, %d entries took %d snapshots (%v); want none", 200, len(snaps), err)
	}
	if rc := s.Raft().ReloadableConfig(); rc.TrailingLogs != DefaultTrailingLogs {
		t.Fatalf("bounded in entries only, trailing logs %d; want %d", rc.TrailingLogs, DefaultTrailingLogs)
	}
}

// TestSnapshotUnthrottledOverTwiceTheBound: a snapshot throttled to a crawl finishes
// once the log holds twice its bound, and the next snapshot is throttled again.
func TestSnapshotUnthrottledOverTwiceTheBound(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.WALSegmentSize = 1 << 20
	// The first snapshot begins with some 3 MiB in the ledger: past the limiter's first
	// burst of 1 MiB, at a byte a second it would take weeks.
	cfg.TrailingBytes, cfg.SnapshotBytes = 1<<20, 3<<20
	cfg.TrailingLogs = 16 // below minTrailingLogs: entries here are small
	cfg.SnapshotRate = 1
	s := mustOpen(t, cfg)
	defer s.Close()
	next := 1
	fillUntil := func(what string, cond func() bool) {
		t.Helper()
		for i := 0; !cond(); i++ {
			if i == 2000 {
				t.Fatalf("%s: not after 2,000 entries (%d bytes in the log)", what, s.logSize.total())
			}
			ingest(t, s, batch("a1", next, 100))
			next += 100
		}
	}
	fillUntil("the log over its snapshot bytes", func() bool { return s.logSize.total() > 3<<20 })
	testutil.WaitFor(t, 10*time.Second, "a snapshot to begin", s.fsm.snapshotting)
	if snap := s.fsm.snap.Load(); snap == nil || snap.Unthrottled() {
		t.Fatal("the snapshot begun under twice the bound is not throttled")
	}
	// Up to near twice the bound it crawls.
	fillUntil("the log near twice its bound", func() bool { return s.logSize.total() > 7<<20 })
	if !s.fsm.snapshotting() || s.fsm.snapIndex.Load() != 0 {
		t.Fatal("the throttled snapshot finished before the log held twice its bound")
	}
	fillUntil("the snapshot finishes, no longer throttled", func() bool { return s.fsm.snapIndex.Load() > 0 })
	// The entries committed while it crawled make the next one due; it begins with the
	// log under twice the bound (compacted), so it is throttled again.
	from := s.fsm.snapIndex.Load()
	fillUntil("the log over its snapshot bytes again", func() bool { return s.logSize.after(from) > 3<<20 })
	testutil.WaitFor(t, 10*time.Second, "the next snapshot to begin", func() bool {
		snap := s.fsm.snap.Load()
		return snap != nil && snap.Index() > from
	})
	if snap, total := s.fsm.snap.Load(), s.logSize.total(); total < 8<<20 && (snap == nil || snap.Unthrottled()) {
		t.Fatalf("the next snapshot, begun with %d bytes in the log (under twice the bound), is not throttled", total)
	}
}
