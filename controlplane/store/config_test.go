package store

import (
	"testing"
	"time"
)

// TestRaftSnapshotSettings: a store opened without snapshot settings runs raft with the
// documented defaults (not raft's own 8192 / 10240), and given ones are used as set.
func TestRaftSnapshotSettings(t *testing.T) {
	s := mustOpen(t, testConfig(t, t.TempDir()))
	rc := s.Raft().ReloadableConfig()
	s.Close()
	if rc.SnapshotThreshold != DefaultSnapshotThreshold || rc.TrailingLogs != DefaultTrailingLogs || rc.SnapshotInterval != DefaultSnapshotInterval {
		t.Errorf("defaults: threshold %d, trailing %d, interval %s; want %d, %d, %s",
			rc.SnapshotThreshold, rc.TrailingLogs, rc.SnapshotInterval, DefaultSnapshotThreshold, DefaultTrailingLogs, DefaultSnapshotInterval)
	}

	cfg := testConfig(t, t.TempDir())
	cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 500, 700, 30*time.Second
	s = mustOpen(t, cfg)
	rc = s.Raft().ReloadableConfig()
	s.Close()
	if rc.SnapshotThreshold != 500 || rc.TrailingLogs != 700 || rc.SnapshotInterval != 30*time.Second {
		t.Errorf("set: threshold %d, trailing %d, interval %s; want 500, 700, 30s", rc.SnapshotThreshold, rc.TrailingLogs, rc.SnapshotInterval)
	}
}
