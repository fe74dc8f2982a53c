package controlplane

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/platform/metrics"
)

// ReadyApplyWithin is how recently a node that is behind the commit index must have
// applied something to count as ready: a node catching up slowly is ready, one stuck
// is not.
const ReadyApplyWithin = 10 * time.Second

// Ready reports why this node should not get traffic, or nil: raft knows a leader,
// the ledger is open, and the node is caught up to the commit index it knows or
// applied within ReadyApplyWithin.
func (s *Server) Ready() error {
	if s.store == nil {
		return errors.New("store not open")
	}
	r := s.store.Raft()
	if st := r.State(); st == raft.Shutdown {
		return errors.New("raft is shut down")
	}
	if _, id := r.LeaderWithID(); id == "" {
		return fmt.Errorf("no raft leader known (this node is %s)", r.State())
	}
	if _, _, err := s.store.Ledger().ClusterID(); err != nil {
		if errors.Is(err, ledger.ErrClosed) {
			return errors.New("ledger is closed")
		}
		return fmt.Errorf("ledger cannot be read: %w", err)
	}
	applied, commit := r.AppliedIndex(), r.CommitIndex()
	o := s.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if applied != o.lastApplied || o.appliedAt.IsZero() {
		o.lastApplied, o.appliedAt = applied, now
	}
	if applied >= commit || now.Sub(o.appliedAt) < ReadyApplyWithin {
		return nil
	}
	return fmt.Errorf("applied index %d is behind commit index %d and has not moved for %s", applied, commit, now.Sub(o.appliedAt).Round(time.Second))
}

// withHealth serves /healthz and /readyz on the API port without a token, ahead of
// the guard; every other path goes to next.
func (s *Server) withHealth(next http.Handler) http.Handler {
	health := http.NewServeMux()
	metrics.Health(health, s.Ready)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; (p == "/healthz" || p == "/readyz") && r.Method == http.MethodGet {
			health.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
