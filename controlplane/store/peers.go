package store

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// peerHealth is the leader's view of which followers answer its heartbeats, kept from
// raft's observations: a failed heartbeat marks the peer unreachable until one
// succeeds again. Raft does not export its replication state, and a follower knows
// nothing of the other followers, so only the leader's view says anything.
type peerHealth struct {
	mu sync.Mutex
	// failing maps a peer the leader's heartbeats fail to reach to the last time it
	// answered (zero when never, as raft reports it).
	failing map[raft.ServerID]time.Time
}

// watch registers an observer on r. The filter runs synchronously in raft's observe
// and records the observation itself; nothing is sent on the observer's channel, so
// no goroutine is needed and raft never blocks on it.
func (h *peerHealth) watch(r *raft.Raft) {
	r.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch d := o.Data.(type) {
		case raft.FailedHeartbeatObservation:
			if h.failing == nil {
				h.failing = map[raft.ServerID]time.Time{}
			}
			h.failing[d.PeerID] = d.LastContact
		case raft.ResumedHeartbeatObservation:
			delete(h.failing, d.PeerID)
		case raft.LeaderObservation:
			// A new term's leader starts its replication afresh.
			clear(h.failing)
		case raft.PeerObservation:
			if d.Removed {
				delete(h.failing, d.Peer.ID)
			}
		}
		return false
	}))
}

// PeerUnreachable reports, on the leader, whether its heartbeats to the peer id fail,
// and when the peer last answered (zero if never since this node leads).
func (s *Store) PeerUnreachable(id string) (bool, time.Time) {
	if !s.IsLeader() {
		return false, time.Time{}
	}
	s.peers.mu.Lock()
	defer s.peers.mu.Unlock()
	t, ok := s.peers.failing[raft.ServerID(id)]
	return ok, t
}
