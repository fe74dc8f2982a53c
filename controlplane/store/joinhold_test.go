package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// TestLogHeldWhileANodeJoins: while the configuration has a non-voter (a node joining),
// the leader takes no snapshot of its own and truncates none of its raft log, so the
// node finds the entries after the snapshot it was sent, however long restoring it
// takes; once the node is removed, snapshots are taken and truncate the log again. Two
// real stores on real TCP transports.
func TestLogHeldWhileANodeJoins(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.WALSegmentSize = 4, 2, 4096
	cfg.SnapshotInterval = 20 * time.Millisecond
	leader := mustOpen(t, cfg)
	defer leader.Close()

	cfg2 := testConfig(t, t.TempDir())
	cfg2.NodeID, cfg2.Bootstrap = "n2", false
	joiner, err := Open(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()

	first := func() uint64 {
		t.Helper()
		i, err := leader.wal.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	latestSnap := func() uint64 {
		t.Helper()
		l, err := leader.snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(l) == 0 {
			return 0
		}
		return l[0].Index
	}
	fill := func(from int) {
		t.Helper()
		for i := range 20 {
			ingest(t, leader, batch("a1", from+i*10, 10))
		}
	}

	// Without a joining node the settings above snapshot and truncate the log.
	fill(1)
	testutil.WaitFor(t, 10*time.Second, "a snapshot that truncates the log", func() bool { return latestSnap() > 0 && first() > 1 })

	if err := leader.Raft().AddNonvoter("n2", raft.ServerAddress(joiner.RaftAddr()), 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the leader to hold its log for the joining node", leader.joinHeld)
	// An explicit snapshot waits for one raft may have begun before the hold, so what
	// follows sees only snapshots begun during it. Raft refuses one until a command after
	// the configuration entry that added the node is applied.
	ingest(t, leader, batch("a1", 500, 10))
	snapshot := func() {
		t.Helper()
		testutil.WaitForDetail(t, 10*time.Second, 10*time.Millisecond, "an explicit snapshot", func() (bool, string) {
			err := leader.Snapshot()
			return err == nil, fmt.Sprint(err)
		})
	}
	snapshot()
	held, heldSnap := first(), latestSnap()
	fill(1000)
	fill(2000)
	if got := latestSnap(); got != heldSnap {
		t.Fatalf("latest snapshot at index %d after 40 entries while a node joins: want none taken after %d", got, heldSnap)
	}
	snapshot() // as an operator's would be
	if got := first(); got != held {
		t.Fatalf("first log index %d after a snapshot while a node joins: want %d (nothing truncated)", got, held)
	}
	if joiner.joinHeld() {
		t.Fatal("the joining node holds its own log; only the leader should")
	}

	// A node catching up for longer than joinHoldMax no longer holds the log (its
	// clock here is the test's: first seen two hours ago).
	stale := &logBound{trailing: cfg.TrailingLogs, threshold: cfg.SnapshotThreshold, hold: joinHold{held: true,
		since: map[raft.ServerID]time.Time{"n2": time.Now().Add(-2 * joinHoldMax)}, now: time.Now}}
	leader.checkLogBound(stale)
	if leader.joinHeld() || stale.hold.held {
		t.Fatalf("the leader still holds its log for a node first seen %s ago", 2*joinHoldMax)
	}
	if rc := leader.Raft().ReloadableConfig(); rc.TrailingLogs != cfg.TrailingLogs || rc.SnapshotThreshold != cfg.SnapshotThreshold {
		t.Fatalf("after the release: trailing logs %d, threshold %d; want the configured %d and %d", rc.TrailingLogs, rc.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotThreshold)
	}

	if err := leader.Raft().RemoveServer("n2", 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the leader to release the hold", func() bool { return !leader.joinHeld() })
	fill(3000)
	testutil.WaitFor(t, 10*time.Second, "snapshots that truncate the log once the node is removed", func() bool { return first() > held })
}
