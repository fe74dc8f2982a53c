package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/features"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/controlplane/views"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Token lifetimes.
const (
	DefaultTokenTTL = 15 * time.Minute
	MaxTokenTTL     = 24 * time.Hour
)

// Admin serves AdminService.
type Admin struct {
	*Backend
	// TempDir receives snapshot uploads before they are restored.
	TempDir string
	// Archive serves ListArchive and ReplayArchive (archive.go).
	Archive ArchiveBackend
	// Views answer GetInventory and GetPrices (inventory.go); nil when they are off.
	Views *views.Views
}

var _ adminv1connect.AdminServiceHandler = (*Admin)(nil)

// CreateToken makes a single-use enrollment token pinned to this cluster's CA.
func (a *Admin) CreateToken(ctx context.Context, req *connect.Request[adminv1.CreateTokenRequest]) (*connect.Response[adminv1.CreateTokenResponse], error) {
	// The kind is required: proto3 cannot tell a missing kind from an unknown name a
	// JSON client sent ("kind": "root" decodes as unset), and neither may become an
	// agent token.
	var kind string
	switch req.Msg.GetKind() {
	case adminv1.TokenKind_TOKEN_KIND_AGENT:
		kind = "agent"
	case adminv1.TokenKind_TOKEN_KIND_SERVER:
		kind = "server"
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("kind: missing or unknown token kind (%d); the kinds are TOKEN_KIND_AGENT (enrolls an agent) and TOKEN_KIND_SERVER (joins a control plane node)", req.Msg.GetKind()))
	}
	ttl := DefaultTokenTTL
	if d := req.Msg.GetTtl(); d != nil {
		ttl = d.AsDuration()
		if ttl <= 0 || ttl > MaxTokenTTL {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("ttl: %s is outside (0, %s]", ttl, MaxTokenTTL))
		}
	}
	if n := req.Msg.GetAgentName(); n != "" && !canonical.ValidName(n) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("agent_name: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", n))
	}
	if req.Msg.GetReplace() && (req.Msg.GetAgentName() == "" || kind != "agent") {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("replace: only an agent token with agent_name (--name) can replace an enrolled agent"))
	}
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	tok, err := pki.NewToken(a.CA().Pin())
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	now := time.Now()
	exp := now.Add(ttl)
	if _, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, &storev1.PutToken{
		Id: tok.ID, SecretSha256: pki.HashSecret(tok.Secret), Kind: kind,
		CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(exp), AgentName: req.Msg.GetAgentName(),
		Replace: req.Msg.GetReplace(),
	}); err != nil {
		return nil, a.storeError(err)
	}
	a.Logger.Info("enrollment token created", "token_id", tok.ID, "kind", kind, "agent", req.Msg.GetAgentName(), "replace", req.Msg.GetReplace(), "expires_at", exp, "audit", true)
	return connect.NewResponse(&adminv1.CreateTokenResponse{Token: tok.String(), TokenId: tok.ID, ExpiresAt: timestamppb.New(exp)}), nil
}

// ListAgents lists enrolled agents with their live connection on this node, if any.
func (a *Admin) ListAgents(ctx context.Context, req *connect.Request[adminv1.ListAgentsRequest]) (*connect.Response[adminv1.ListAgentsResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	recs, err := a.Store.Ledger().Agents()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &adminv1.ListAgentsResponse{}
	for _, r := range recs {
		out.Agents = append(out.Agents, a.agentInfo(r))
	}
	return connect.NewResponse(out), nil
}

// DescribeAgent shows one agent with its connectors as it last reported them.
func (a *Admin) DescribeAgent(ctx context.Context, req *connect.Request[adminv1.DescribeAgentRequest]) (*connect.Response[adminv1.DescribeAgentResponse], error) {
	id := req.Msg.GetId()
	if !canonical.ValidName(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: %q is not an agent id (1-64 characters of a-z, 0-9, '-', '_' or '.')", id))
	}
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	r, ok, err := a.Store.Ledger().Agent(id)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no agent %q is enrolled (crossdock agents ls lists them)", id))
	}
	out := &adminv1.DescribeAgentResponse{Agent: a.agentInfo(r)}
	if rep, ok := a.reports.get(id); ok {
		out.Connectors, out.ConnectorsReportedAt = rep.connectors, timestamppb.New(rep.at)
	}
	return connect.NewResponse(out), nil
}

// agentInfo is an agent's record with its live stream on this node, if any.
func (a *Admin) agentInfo(r *storev1.AgentRecord) *adminv1.Agent {
	ag := &adminv1.Agent{
		Id: r.GetId(), EnrolledAt: r.GetEnrolledAt(), CommittedSeq: r.GetCommittedSeq(),
		EventsCommitted: r.GetEventsCommitted(), Duplicates: r.GetDuplicates(),
		Incarnation: r.GetIncarnation(), Revoked: r.GetRevoked(), RevokedAt: r.GetRevokedAt(),
		RevokedReason: r.GetRevokedReason(), Conflicts: r.GetConflicts(), OutboxInstance: r.GetInstance(),
	}
	for _, c := range r.GetCerts() {
		if na := c.GetNotAfter(); na != nil && (ag.CertNotAfter == nil || na.AsTime().After(ag.CertNotAfter.AsTime())) {
			ag.CertNotAfter = na
		}
	}
	for _, c := range r.GetRecentConflicts() {
		ag.RecentConflicts = append(ag.RecentConflicts, &adminv1.IdConflict{
			Id: c.GetId(), AgentSeq: c.GetAgentSeq(), Connector: c.GetConnector(), Position: c.GetPosition(),
			ExistingSeq: c.GetExistingSeq(), Differs: c.GetDiffers(), At: c.GetAt(),
		})
	}
	if c, ok := a.Registry.Get(r.GetId()); ok {
		ag.Connected, ag.Transport, ag.RemoteAddr = true, c.Transport, c.RemoteAddr
		ag.NodeId, ag.LastSeen = a.Store.NodeID(), timestamppb.New(c.LastSeen)
	}
	return ag
}

// RevokeAgent retires an agent's identity and ends its stream at once.
func (a *Admin) RevokeAgent(ctx context.Context, req *connect.Request[adminv1.RevokeAgentRequest]) (*connect.Response[adminv1.RevokeAgentResponse], error) {
	id := req.Msg.GetId()
	if !canonical.ValidName(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: %q is not an agent id (1-64 characters of a-z, 0-9, '-', '_' or '.')", id))
	}
	if len(req.Msg.GetReason()) > 256 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("reason: at most 256 bytes"))
	}
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	reason := req.Msg.GetReason()
	if reason == "" {
		reason = "revoked by an operator"
	}
	res, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_REVOKE_AGENT, &storev1.RevokeAgent{
		AgentId: id, At: timestamppb.Now(), Reason: reason,
	})
	if err != nil {
		return nil, a.storeError(err)
	}
	if r, _ := res.(*storev1.AgentCommandResult); r.GetError() != "" {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%s (crossdock agents ls lists the enrolled agents)", r.GetError()))
	}
	a.Registry.Kick(id, fmt.Errorf("agent %s was revoked: %s", id, reason))
	a.Logger.Info("agent revoked", "agent", id, "reason", reason, "audit", true)
	r, _, err := a.Store.Ledger().Agent(id)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&adminv1.RevokeAgentResponse{Agent: a.agentInfo(r)}), nil
}

func clampLimit(n uint32) int {
	switch {
	case n == 0:
		return 100
	case n > 10000:
		return 10000
	}
	return int(n)
}

// ListEvents reads the ledger.
func (a *Admin) ListEvents(ctx context.Context, req *connect.Request[adminv1.ListEventsRequest]) (*connect.Response[adminv1.ListEventsResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	l := a.Store.Ledger()
	last := l.LastSeq()
	evs, next, err := l.ListEvents(ledger.Filter{Type: req.Msg.GetType(), Keys: req.Msg.GetKeys()}, req.Msg.GetFromSeq(), clampLimit(req.Msg.GetLimit()))
	if err != nil {
		return nil, readError(err)
	}
	return connect.NewResponse(&adminv1.ListEventsResponse{Events: evs, NextSeq: next, LastSeq: last}), nil
}

// TailEvents streams events from a seq, then each new one as it is committed.
func (a *Admin) TailEvents(ctx context.Context, req *connect.Request[adminv1.TailEventsRequest], stream *connect.ServerStream[adminv1.TailEventsResponse]) error {
	l := a.Store.Ledger()
	from := req.Msg.GetFromSeq()
	if from == 0 {
		from = l.LastSeq() + 1
	}
	f := ledger.Filter{Type: req.Msg.GetType(), Keys: req.Msg.GetKeys()}
	for {
		changed := l.Changed()
		evs, _, err := l.ListEvents(f, from, 500)
		if err != nil {
			return readError(err)
		}
		for _, ev := range evs {
			if err := stream.Send(&adminv1.TailEventsResponse{Event: ev}); err != nil {
				return err
			}
			from = ev.GetSeq() + 1
		}
		if len(evs) > 0 {
			continue
		}
		// Nothing matched up to the end of the ledger: skip ahead so the next scan starts
		// where new events will land.
		if last := l.LastSeq(); last >= from {
			from = last + 1
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// SaveSnapshot streams a point-in-time backup of this node's state.
func (a *Admin) SaveSnapshot(ctx context.Context, req *connect.Request[adminv1.SaveSnapshotRequest], stream *connect.ServerStream[adminv1.SaveSnapshotResponse]) error {
	snap, err := a.Store.Ledger().OpenSnapshot()
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	defer snap.Release()
	w := &chunkWriter{index: snap.Index(), send: stream.Send}
	if _, err := snap.WriteTo(w); err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("write snapshot: %w", err))
	}
	if err := w.flush(); err != nil {
		return err
	}
	a.Logger.Info("snapshot saved by admin", "index", snap.Index(), "bytes", w.sent, "audit", true)
	return nil
}

type chunkWriter struct {
	buf   []byte
	index uint64
	sent  uint64
	first bool
	send  func(*adminv1.SaveSnapshotResponse) error
}

const chunkSize = 256 << 10

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= chunkSize {
		if err := w.emit(w.buf[:chunkSize]); err != nil {
			return 0, err
		}
		w.buf = w.buf[chunkSize:]
	}
	return len(p), nil
}

func (w *chunkWriter) emit(b []byte) error {
	w.sent += uint64(len(b))
	msg := &adminv1.SaveSnapshotResponse{Chunk: append([]byte(nil), b...), BytesSent: w.sent}
	if !w.first {
		msg.Index, w.first = w.index, true
	}
	return w.send(msg)
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 && w.first {
		return nil
	}
	err := w.emit(w.buf)
	w.buf = nil
	return err
}

// RestoreSnapshot replaces the cluster's state with an uploaded backup. The upload is
// written to a file and verified before raft installs it.
func (a *Admin) RestoreSnapshot(ctx context.Context, stream *connect.ClientStream[adminv1.RestoreSnapshotRequest]) (*connect.Response[adminv1.RestoreSnapshotResponse], error) {
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	f, err := os.CreateTemp(a.TempDir, "restore-*.snap")
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	force, first := false, true
	for stream.Receive() {
		if first {
			force, first = stream.Msg().GetForce(), false
		}
		if _, err := f.Write(stream.Msg().GetChunk()); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("buffer upload: %w", err))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	idx, err := a.Store.RestoreBackup(f, store.RestoreOptions{Force: force})
	if err != nil {
		var mismatch *store.ClusterMismatchError
		switch {
		case errors.Is(err, ledger.ErrSnapshotCorrupt):
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		case errors.As(err, &mismatch):
			a.Logger.Warn("refused to restore a backup of another cluster", "cluster_id", mismatch.Live, "backup_cluster_id", mismatch.Backup, "audit", true)
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("refused: %w. Restoring it would replace this cluster's CA, admin tokens and node list with the backup's; "+
				"to do that on purpose (a migration), run the restore again with --force (docs/operations.md, Backup and restore)", err))
		}
		return nil, a.storeError(err)
	}
	cid, _, err := a.Store.Ledger().ClusterID()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	a.Logger.Warn("cluster state restored from an uploaded snapshot", "raft_index", idx, "last_seq", a.Store.Ledger().LastSeq(), "cluster_id", cid, "forced", force, "audit", true)
	return connect.NewResponse(&adminv1.RestoreSnapshotResponse{Index: idx, Events: a.Store.Ledger().LastSeq(), ClusterId: cid}), nil
}

// GetClusterStatus describes raft membership as this node sees it. On the leader a
// follower whose heartbeats fail is "unreachable"; without a leader the other nodes'
// roles are "unknown".
func (a *Admin) GetClusterStatus(ctx context.Context, req *connect.Request[adminv1.GetClusterStatusRequest]) (*connect.Response[adminv1.GetClusterStatusResponse], error) {
	r := a.Store.Raft()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	_, leaderID := a.Store.Leader()
	out := &adminv1.GetClusterStatusResponse{LeaderId: leaderID, LastSeq: a.Store.Ledger().LastSeq()}
	if cid, _, err := a.Store.Ledger().ClusterID(); err == nil {
		out.ClusterId = cid
	}
	out.Retention = retentionStatus(a.Store.Ledger())
	var disks map[string]diskguard.Status
	if a.Disk != nil {
		disks = a.Disk.Nodes()
		if err := a.Disk.Check(); err != nil {
			out.WritesRefused = err.Error()
		}
	}
	if a.Store.IsLeader() {
		out.OlderBuilds = a.OlderBuilds(cf.Configuration(), features.Build()...)
	}
	for _, s := range cf.Configuration().Servers {
		p := &adminv1.Peer{Id: string(s.ID), Address: string(s.Address), Role: "follower"}
		if n, ok, _ := a.Store.Ledger().Node(string(s.ID)); ok {
			p.ApiAddress = n.GetApiAddr()
		}
		switch {
		case string(s.ID) == leaderID:
			p.Role = "leader"
		case s.Suffrage != raft.Voter:
			p.Role = "nonvoter"
		}
		if string(s.ID) == a.Store.NodeID() {
			p.AppliedIndex = r.AppliedIndex()
			if p.Role != "leader" {
				p.LastContact = timestamppb.New(r.LastContact())
			}
		} else if down, last := a.Store.PeerUnreachable(string(s.ID)); down {
			// Only the leader knows whether a follower answers (its heartbeats fail);
			// a follower's view of the other followers is what the configuration says.
			p.Role = "unreachable"
			if !last.IsZero() {
				p.LastContact = timestamppb.New(last)
			}
		}
		if d, ok := disks[string(s.ID)]; ok {
			p.DiskFreeBytes, p.DiskMinFreeBytes = d.Free, d.Min
		}
		if leaderID == "" && string(s.ID) != a.Store.NodeID() {
			// No leader: nobody knows whether the other nodes are alive.
			p.Role = "unknown"
		}
		out.Peers = append(out.Peers, p)
	}
	return connect.NewResponse(out), nil
}

// RemovePeer takes a node out of the raft configuration and forgets its addresses.
func (a *Admin) RemovePeer(ctx context.Context, req *connect.Request[adminv1.RemovePeerRequest]) (*connect.Response[adminv1.RemovePeerResponse], error) {
	id := req.Msg.GetId()
	if id == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id: required"))
	}
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	cf := a.Store.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, a.storeError(err)
	}
	found := false
	for _, s := range cf.Configuration().Servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no peer %q in the raft configuration (see crossdock cluster peers)", id))
	}
	if id == a.Store.NodeID() {
		// A leader cannot remove itself and keep answering: hand leadership over, and
		// let the caller retry on the new leader (the CLI follows the redirect).
		if err := a.Store.Raft().LeadershipTransfer().Error(); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("transfer leadership before removing this node: %w", err))
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, l := a.Store.Leader(); l != "" && l != id {
				break
			}
		}
		return nil, a.notLeader()
	}
	if _, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_REMOVE_NODE, &storev1.RemoveNode{Id: id}); err != nil {
		return nil, a.storeError(err)
	}
	if err := a.Store.Raft().RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
		return nil, a.storeError(err)
	}
	a.Logger.Warn("node removed from the cluster", "removed", id, "audit", true)
	return connect.NewResponse(&adminv1.RemovePeerResponse{}), nil
}
