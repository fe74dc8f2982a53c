package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/features"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/internal/seal"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
)

// Backend is what the handlers need from the node they run on.
type Backend struct {
	Store *store.Store
	CA    func() *pki.CA
	// Keys seals the secrets this node stores (destination secrets, the CA key); nil
	// only in tests that store none.
	Keys     *seal.Keyring
	Registry *Registry
	Logger   *slog.Logger
	// ApplyTimeout bounds one raft apply (default 10s).
	ApplyTimeout time.Duration
	// AgentCertTTL is the lifetime of the certificates issued to agents at enrollment
	// and renewal (AgentCertTTL when 0).
	AgentCertTTL time.Duration

	// ReleaseDir keeps the agent binaries pushed to this node (releases.go); none are
	// accepted when empty. MaxReleaseBytes bounds one (DefaultMaxReleaseBytes when 0).
	ReleaseDir      string
	MaxReleaseBytes int64
	// NodeClient calls other nodes with this node's certificate (copying releases).
	NodeClient *http.Client
	// Disk is this node's disk guard: it keeps the followers' reports (ReportDisk) and
	// says why new events are refused; nil in tests without one.
	Disk *diskguard.Guard
	// Features keeps the stored-state features the followers' builds apply, from the
	// same reports; nil in tests without it.
	Features *features.Reports

	releaseFetch sync.Mutex // releases.go
	reports      connectorReports
	fleet        fleetState   // fleet.go
	upgrades     upgradeSends // rollout.go
	// Sinks is the downlink to agents' sink connectors, for the delivery engine.
	Sinks AgentSinks
}

// connectorReports keeps the latest connector report of each agent streaming to this
// node, in memory: it is live status, not state worth a raft entry, and admin reads run
// on the leader, which is where agents stream.
type connectorReports struct {
	mu sync.Mutex
	m  map[string]connectorReport
}

type connectorReport struct {
	at         time.Time
	connectors []*agentv1.ConnectorStatus
}

func (r *connectorReports) put(agentID string, cs []*agentv1.ConnectorStatus, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]connectorReport{}
	}
	r.m[agentID] = connectorReport{at: at, connectors: cs}
}

func (r *connectorReports) get(agentID string) (connectorReport, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.m[agentID]
	return c, ok
}

// MaxConnectorReport bounds the connectors of one report.
const MaxConnectorReport = 256

func (b *Backend) agentCertTTL() time.Duration {
	if b.AgentCertTTL > 0 {
		return b.AgentCertTTL
	}
	return AgentCertTTL
}

func (b *Backend) applyTimeout() time.Duration {
	if b.ApplyTimeout > 0 {
		return b.ApplyTimeout
	}
	return 10 * time.Second
}

// LeaderAPIAddr returns the current leader's API address, "" when unknown.
func (b *Backend) LeaderAPIAddr() string {
	_, id := b.Store.Leader()
	if id == "" {
		return ""
	}
	n, ok, err := b.Store.Ledger().Node(id)
	if err != nil || !ok {
		return ""
	}
	return n.GetApiAddr()
}

// notLeader answers a call that needs the leader but reached a follower.
func (b *Backend) notLeader() error {
	addr, id := b.Store.Leader()
	if addr == "" {
		return connect.NewError(connect.CodeUnavailable, errors.New("no raft leader elected yet; retry shortly"))
	}
	api := b.LeaderAPIAddr()
	err := connect.NewError(connect.CodeUnavailable, fmt.Errorf("this node is not the leader; the leader is %s at %s", id, api))
	if api != "" {
		err.Meta().Set(protocol.LeaderHeader, api)
	}
	return err
}

// ConsistentRead returns once this node is the leader and has applied everything
// committed when the call arrived, so a read after it reflects every write acknowledged
// before it.
//
// It commits a raft barrier and waits for the FSM to apply it. A read index (verify
// leadership, then wait for the commit index) is not enough with hashicorp/raft: a new
// leader's CommitIndex lags until it commits an entry of its own term (a write the old
// leader acknowledged can be missing), and Raft.AppliedIndex counts entries handed to
// the FSM, not applied by it. The barrier is an entry of this leader's term, so it
// commits only while this node leads a quorum and after every acknowledged write, and
// its future returns after the FSM has applied everything before it.
func (b *Backend) ConsistentRead(ctx context.Context) error {
	if !b.Store.IsLeader() {
		return b.notLeader()
	}
	if err := b.Store.Raft().Barrier(b.applyTimeout()).Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return b.storeError(store.ErrClosed)
		}
		return b.notLeader()
	}
	return nil
}

func (b *Backend) storeError(err error) error {
	var low *diskguard.LowError
	switch {
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, raft.ErrNotLeader):
		return b.notLeader()
	case errors.Is(err, store.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, errors.New("control plane node is shutting down"))
	case errors.As(err, &low):
		return connect.NewError(connect.CodeResourceExhausted, low) // refused before raft: nothing committed
	}
	return connect.NewError(connect.CodeInternal, err)
}

// ConnectorReport is an agent's latest connector report to this node and when it came
// (the console's fleet page).
func (b *Backend) ConnectorReport(agentID string) ([]*agentv1.ConnectorStatus, time.Time, bool) {
	r, ok := b.reports.get(agentID)
	return r.connectors, r.at, ok
}
