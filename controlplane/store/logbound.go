package store

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Bounding the raft log in bytes.
//
// Raft bounds its log in entries: a snapshot is due every SnapshotThreshold entries, and
// TrailingLogs entries stay after it. An entry is one uplink batch, from one event to
// 4 MiB, so that bounds no bytes: with batches of 1,000 events, threshold + trailing
// entries are some 3.7 GB of log: bench/ledgermem kept a whole 4 million event ledger,
// and 12 million events of a 16 million one, in the raft log, on disk and, at about
// 1 MiB that raft-wal keeps per 64 MiB segment, 1.7% of it in memory
// (docs/performance.md). So the store also
// counts the log's bytes (logSize) and:
//
//   - lowers TrailingLogs to the newest entries that hold at most TrailingBytes (and no
//     fewer than minTrailingLogs);
//   - takes a snapshot when the entries after the newest snapshot hold more than
//     SnapshotBytes, unless one is being taken, so the log holds about TrailingBytes +
//     SnapshotBytes at most;
//   - lifts the snapshot rate limit (SnapshotRate) from a running snapshot once the log
//     holds twice that: a throttled snapshot of a large ledger takes minutes, and under
//     heavy ingest the log grows without bound until it is done.
//
// While a node joins, the join hold (joinhold.go) comes first: nothing is truncated and
// no snapshot is taken.
const (
	logBoundEvery = time.Second
	// minTrailingLogs is the fewest entries TrailingBytes lowers TrailingLogs to: one
	// full group of raft's appends, so a follower a moment behind is never sent a
	// snapshot because the entries were large.
	minTrailingLogs = 64
)

// logBound is the state of the loop that bounds the raft log.
type logBound struct {
	hold                joinHold
	trailing, threshold uint64 // the configured TrailingLogs and SnapshotThreshold (entries)
	// trailingBytes and snapshotBytes are Config.TrailingBytes and SnapshotBytes; 0 when
	// the log is bounded in entries only.
	trailingBytes, snapshotBytes uint64
	requested                    atomic.Bool // a snapshot this loop asked for is running
}

// boundLog runs the bound until ctx is done, checking every logBoundEvery.
func (s *Store) boundLog(ctx context.Context, b *logBound) {
	t := time.NewTicker(logBoundEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkLogBound(b)
	}
}

// checkLogBound sets TrailingLogs and SnapshotThreshold for the join hold and the
// byte bound, and takes or speeds up a snapshot when the log is over its bound.
func (s *Store) checkLogBound(b *logBound) {
	holders := s.joinHolders(&b.hold)
	held := len(holders) > 0
	trailing, threshold := b.trailing, b.threshold
	switch {
	case held:
		trailing, threshold = math.MaxUint64, math.MaxUint64
	case b.trailingBytes > 0:
		trailing = min(trailing, max(minTrailingLogs, s.logSize.trailing(b.trailingBytes)))
	}
	rc := s.raft.ReloadableConfig()
	if rc.TrailingLogs != trailing || rc.SnapshotThreshold != threshold {
		rc.TrailingLogs, rc.SnapshotThreshold = trailing, threshold
		if err := s.raft.ReloadConfig(rc); err != nil {
			s.logger.Error("store: raft log bound not changed", "join_hold", held, "trailing_logs", trailing, "err", err)
			return
		}
	}
	if held != b.hold.held {
		b.hold.held = held
		if held {
			s.logger.Info("raft log kept whole while a node joins: no snapshot is taken and no entry truncated until it is promoted or removed", "joining", holders)
		} else {
			s.logger.Info("raft log truncated after snapshots again: no node is joining", "trailing_logs", trailing)
		}
	}
	if held || b.snapshotBytes == 0 {
		return
	}
	since := s.logSize.after(s.fsm.snapIndex.Load())
	if since > b.snapshotBytes && !s.fsm.snapshotting() && b.requested.CompareAndSwap(false, true) {
		s.logger.Info("raft log over its size: taking a snapshot", "bytes_since_snapshot", since, "snapshot_bytes", b.snapshotBytes)
		go func() {
			defer b.requested.Store(false)
			err := s.raft.Snapshot().Error()
			if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) && !errors.Is(err, raft.ErrRaftShutdown) && s.fsm.snapCtx.Err() == nil {
				s.logger.Warn("store: snapshot for the raft log's size failed", "err", err)
			}
		}()
	}
	total, bound := s.logSize.total(), b.trailingBytes+b.snapshotBytes
	if total > 2*bound && s.fsm.unthrottle() {
		s.logger.Info("raft log twice its size while a snapshot runs: the snapshot is no longer rate limited", "log_bytes", total, "bound_bytes", bound)
	}
}

// LogBytes is the bytes of entry data in this node's raft log now (as counted by
// logSize: exact for what this process wrote, estimated for what was on disk at Open).
func (s *Store) LogBytes() uint64 { return s.logSize.total() }

// Snapshotting reports whether this node is taking a raft snapshot of its ledger now.
func (s *Store) Snapshotting() bool { return s.fsm.snapshotting() }
