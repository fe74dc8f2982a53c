package store

import (
	"maps"
	"math"
	"time"

	"github.com/hashicorp/raft"
)

// Holding the log for a joining node.
//
// A node joins as a non-voter and, when the leader's log no longer reaches back to it,
// receives the leader's latest snapshot; it then needs the log from that snapshot's
// index on. Raft truncates the log after each snapshot, keeping TrailingLogs entries.
// When streaming and restoring the snapshot takes longer than ingest needs to append
// TrailingLogs entries (a large ledger under heavy ingest), the entries after the
// snapshot are gone by the time the node asks for them, raft sends a newer snapshot,
// and the join starts over, each round longer than the last: bench/growth at 16 million
// events without retention went round three times in ten minutes (docs/performance.md).
//
// So while the configuration has a non-voter, the leader truncates nothing and takes no
// snapshot: TrailingLogs and SnapshotThreshold are raised until the last non-voter is
// promoted or removed, then set back. Keeping the log is not enough on its own: the
// first append after a restore names the snapshot's last entry as its previous one, and
// the leader's own snapshot already truncated that entry, so the leader answers it from
// its latest snapshot's metadata, which only works while that snapshot is still its
// latest (bench/growth at 16 million events went round once more without this). The log on
// the leader grows meanwhile by what is committed during the join (the disk guard
// bounds it like any other growth). A non-voter the leader cannot reach for
// joinHoldUnreachable, or that has been catching up for longer than joinHoldMax, no
// longer holds the log: a node that is gone must not grow the leader's disk forever.
const (
	joinHoldMax         = time.Hour
	joinHoldUnreachable = 2 * time.Minute
)

// joinHold is the state of the hold on one node: which non-voters it holds the log for,
// since when, and whether it holds it now. The log bound's loop checks it (logbound.go).
type joinHold struct {
	since map[raft.ServerID]time.Time
	held  bool
	now   func() time.Time
}

// joinHeld reports whether the leader keeps its whole raft log for a joining node now.
func (s *Store) joinHeld() bool {
	return s.raft.ReloadableConfig().TrailingLogs == math.MaxUint64
}

// joinHolders returns, on the leader, the non-voters that hold the log now, and keeps
// h.since to the non-voters in the configuration; on a follower, none.
func (s *Store) joinHolders(h *joinHold) []raft.ServerID {
	if !s.IsLeader() {
		clear(h.since)
		return nil
	}
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return nil
	}
	now := h.now()
	var holders []raft.ServerID
	seen := map[raft.ServerID]bool{}
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage != raft.Nonvoter {
			continue
		}
		seen[srv.ID] = true
		first, ok := h.since[srv.ID]
		if !ok {
			first = now
			h.since[srv.ID] = first
		}
		down, last := s.PeerUnreachable(string(srv.ID))
		gone := down && now.Sub(last) > joinHoldUnreachable && now.Sub(first) > joinHoldUnreachable
		if now.Sub(first) <= joinHoldMax && !gone {
			holders = append(holders, srv.ID)
		}
	}
	maps.DeleteFunc(h.since, func(id raft.ServerID, _ time.Time) bool { return !seen[id] })
	return holders
}
