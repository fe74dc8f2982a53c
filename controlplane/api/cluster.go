package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/seal"
	clusterv1 "github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1/clusterv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Cluster serves ClusterService: nodes joining and being promoted.
type Cluster struct {
	*Backend
}

var _ clusterv1connect.ClusterServiceHandler = (*Cluster)(nil)

// Join adds a node as a non-voter after checking its server-kind token.
func (c *Cluster) Join(ctx context.Context, req *connect.Request[clusterv1.JoinRequest]) (*connect.Response[clusterv1.JoinResponse], error) {
	m := req.Msg
	if !canonical.ValidName(m.GetNodeId()) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("node_id: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", m.GetNodeId()))
	}
	if m.GetRaftAddr() == "" || m.GetApiAddr() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("raft_addr and api_addr are required"))
	}
	tok, err := pki.ParseToken(m.GetToken())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ca := c.CA()
	if tok.CAPin != ca.Pin() {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("join token pins CA %s but this cluster's CA is %s", tok.CAPin, ca.Pin()))
	}
	if !c.Store.IsLeader() {
		return nil, c.notLeader()
	}
	if rec, ok, err := c.Store.Ledger().Token(tok.ID); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	} else if ok && rec.GetToken().GetKind() != "server" {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("this is an agent enrollment token; a node joins with `crossdock token create --kind server`"))
	}
	res, err := c.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{
		Id: tok.ID, SecretSha256: pki.HashSecret(tok.Secret), At: timestamppb.Now(), AgentName: m.GetNodeId(),
	})
	if err != nil {
		return nil, c.storeError(err)
	}
	if r, ok := res.(*storev1.ConsumeTokenResult); !ok || r.GetError() != "" {
		msg := "unexpected result"
		if ok {
			msg = r.GetError()
		}
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(msg))
	}
	if _, err := c.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_NODE, &storev1.PutNode{
		Id: m.GetNodeId(), ApiAddr: m.GetApiAddr(), RaftAddr: m.GetRaftAddr(), JoinedAt: timestamppb.Now(),
	}); err != nil {
		return nil, c.storeError(err)
	}
	f := c.Store.Raft().AddNonvoter(raft.ServerID(m.GetNodeId()), raft.ServerAddress(m.GetRaftAddr()), 0, 30*time.Second)
	if err := f.Error(); err != nil {
		return nil, c.storeError(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if c.Keys == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node has no secrets key to hand the new node"))
	}
	_, leaderID := c.Store.Leader()
	c.Logger.Info("node joined as non-voter", "joined", m.GetNodeId(), "raft", m.GetRaftAddr(), "api", m.GetApiAddr(), "index", f.Index(), "audit", true)
	return connect.NewResponse(&clusterv1.JoinResponse{
		CaCertPem: string(ca.CertPEM()), CaKeyPem: c.Keys.Seal(seal.PurposeCAKey, keyPEM), Index: f.Index(), LeaderId: leaderID,
		SecretsKeys: string(c.Keys.Text()),
	}), nil
}

// Promote makes the calling node, a caught-up non-voter, a voter.
func (c *Cluster) Promote(ctx context.Context, req *connect.Request[clusterv1.PromoteRequest]) (*connect.Response[clusterv1.PromoteResponse], error) {
	id, role, err := pki.PeerIdentity(PeerFrom(ctx).TLS)
	if err != nil || role != pki.RoleServer {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("promote needs a control plane node certificate"))
	}
	if !c.Store.IsLeader() {
		return nil, c.notLeader()
	}
	cf := c.Store.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, c.storeError(err)
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) != id {
			continue
		}
		if s.Suffrage == raft.Voter {
			return connect.NewResponse(&clusterv1.PromoteResponse{}), nil
		}
		if err := c.Store.Raft().AddVoter(s.ID, s.Address, 0, 30*time.Second).Error(); err != nil {
			return nil, c.storeError(err)
		}
		c.Logger.Info("node promoted to voter", "promoted", id, "applied_index", req.Msg.GetAppliedIndex(), "audit", true)
		return connect.NewResponse(&clusterv1.PromoteResponse{}), nil
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("node %s is not in the raft configuration; join it first", id))
}

// OlderBuilds returns, sorted, the nodes of configuration cf that have not reported to
// this node, in its current raft term, a build that applies every one of want
// (controlplane/features). Only the leader receives reports: on a follower every other
// node is listed. Nil when Features is nil.
func (b *Backend) OlderBuilds(cf raft.Configuration, want ...string) []string {
	if b.Features == nil {
		return nil
	}
	ids := make([]string, 0, len(cf.Servers))
	for _, s := range cf.Servers {
		ids = append(ids, string(s.ID))
	}
	return b.Features.Missing(b.Store.NodeID(), ids, b.Store.Raft().CurrentTerm(), want...)
}

// ReportDisk keeps the calling node's free disk on the leader, whose disk guard refuses
// new events while a node keeps less than its minimum, and the stored-state features
// its build applies (controlplane/features).
func (c *Cluster) ReportDisk(ctx context.Context, req *connect.Request[clusterv1.ReportDiskRequest]) (*connect.Response[clusterv1.ReportDiskResponse], error) {
	id, role, err := pki.PeerIdentity(PeerFrom(ctx).TLS)
	if err != nil || role != pki.RoleServer {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("disk reports need a control plane node certificate"))
	}
	if !c.Store.IsLeader() {
		return nil, c.notLeader()
	}
	if c.Disk != nil {
		m := req.Msg
		c.Disk.Record(diskguard.Status{Node: id, Free: m.GetFreeBytes(), Min: m.GetMinFreeBytes(), Off: m.GetGuardOff()})
	}
	if c.Features != nil {
		c.Features.Record(id, req.Msg.GetFeatures(), c.Store.Raft().CurrentTerm())
	}
	return connect.NewResponse(&clusterv1.ReportDiskResponse{}), nil
}
