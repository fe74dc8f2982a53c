package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/labels"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Rollouts (`crossdock agents upgrade`): a rollout is committed through raft, and the
// leader drives it: at most max_parallel agents upgrading at once, each one's state
// committed as it changes. The agents stream to the leader, so the stream of an agent
// whose turn it is sends it an UpgradeCommand. An agent is done when it is connected
// again reporting the target version; it failed when it reports a rollback or a failure,
// or is not back within its deadline plus RolloutGrace. A failure stops the rollout.

// Rollout and rollout agent states.
const (
	RolloutRunning   = "running"
	RolloutDone      = "done"
	RolloutFailed    = "failed"
	RolloutCancelled = "cancelled"
	RolloutWaiting   = "waiting"
	RolloutUpgrading = "upgrading"
	RolloutSkipped   = "skipped"
)

// Upgrade report states (uplinkv1.UpgradeReport.state).
const (
	UpgradeUpgraded   = "upgraded"
	UpgradeFailed     = "failed"
	UpgradeRolledBack = "rolled_back"
)

var (
	// RolloutTick is how often the leader steps rollouts, and how often an agent's
	// stream looks for an upgrade to send it.
	RolloutTick = 500 * time.Millisecond
	// RolloutGrace is how long past an agent's deadline the control plane waits for it
	// (it restarts, rolls back and reconnects in that time) before calling it failed.
	RolloutGrace = 30 * time.Second
)

// Limits of StartUpgrade.
const (
	defaultUpgradeDeadline = 2 * time.Minute
	maxUpgradeDeadline     = time.Hour
	maxUpgradeParallel     = 1000
)

// upgradeSends are the upgrade commands the leader's agent streams send: one per agent
// whose turn it is, set by every rollout step.
type upgradeSends struct {
	mu sync.Mutex
	m  map[string]*uplinkv1.UpgradeCommand
}

func (s *upgradeSends) set(m map[string]*uplinkv1.UpgradeCommand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = m
}

func (s *upgradeSends) get(agentID string) *uplinkv1.UpgradeCommand {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[agentID]
}

func upgradeCommand(r *storev1.Rollout) *uplinkv1.UpgradeCommand {
	return &uplinkv1.UpgradeCommand{RolloutId: r.GetId(), Version: r.GetVersion(), Os: r.GetOs(), Arch: r.GetArch(),
		Sha256: r.GetSha256(), Size: r.GetSize(), DeadlineMs: r.GetDeadlineMs()}
}

// StartUpgrade commits a rollout of a pushed release to the agents the selector picks;
// a rollout still running is cancelled first.
func (f *Fleet) StartUpgrade(ctx context.Context, req *connect.Request[adminv1.StartUpgradeRequest]) (*connect.Response[adminv1.StartUpgradeResponse], error) {
	m := req.Msg
	sel, err := labels.Parse(m.GetSelector())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("selector: %w", err))
	}
	osName, arch := m.GetOs(), m.GetArch()
	if osName == "" {
		osName = "linux"
	}
	if arch == "" {
		arch = "amd64"
	}
	parallel := m.GetMaxParallel()
	if parallel == 0 {
		parallel = 1
	}
	if parallel > maxUpgradeParallel {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("max_parallel %d: at most %d", parallel, maxUpgradeParallel))
	}
	deadline := defaultUpgradeDeadline
	if m.GetDeadline() != nil {
		deadline = m.GetDeadline().AsDuration()
	}
	if deadline < time.Second || deadline > maxUpgradeDeadline {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("deadline %s: between 1s and %s", deadline, maxUpgradeDeadline))
	}
	if !f.Store.IsLeader() {
		return nil, f.notLeader()
	}
	rels, err := f.Store.Ledger().Releases()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	i := slices.IndexFunc(rels, func(r *storev1.Release) bool {
		return r.GetVersion() == m.GetVersion() && r.GetOs() == osName && r.GetArch() == arch
	})
	if i < 0 {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no release %s for %s/%s: push it first (crossdock releases push FILE --version %s --os %s --arch %s)", m.GetVersion(), osName, arch, m.GetVersion(), osName, arch))
	}
	rel := rels[i]
	agents, err := f.Store.Ledger().Agents()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	all, err := f.Store.Ledger().AgentLabels()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	now := timestamppb.Now()
	ro := &storev1.Rollout{Version: rel.GetVersion(), Os: rel.GetOs(), Arch: rel.GetArch(), Sha256: rel.GetSha256(), Size: rel.GetSize(),
		Selector: labels.String(sel), MaxParallel: parallel, DeadlineMs: deadline.Milliseconds(), State: RolloutRunning,
		Actor: actor(req.Header()), CreatedAt: now, UpdatedAt: now}
	for _, a := range agents { // Agents lists by id
		if !a.GetRevoked() && labels.Matches(sel, all[a.GetId()]) {
			ro.Agents = append(ro.Agents, &storev1.RolloutAgent{AgentId: a.GetId(), State: RolloutWaiting})
		}
	}
	if len(ro.GetAgents()) == 0 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("no enrolled agent matches selector %q", m.GetSelector()))
	}
	existing, err := f.Store.Ledger().Rollouts()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	for _, r := range existing {
		if r.GetState() != RolloutRunning {
			continue
		}
		r.State, r.Reason, r.UpdatedAt = RolloutCancelled, "replaced by a newer rollout", now
		if err := f.putRollout(ctx, r); err != nil {
			return nil, err
		}
	}
	ro.Id = fmt.Sprintf("r%06d", len(existing)+1)
	if err := f.putRollout(ctx, ro); err != nil {
		return nil, err
	}
	f.Logger.Info("agent upgrade started", "rollout", ro.GetId(), "version", ro.GetVersion(), "agents", len(ro.GetAgents()),
		"max_parallel", parallel, "deadline", deadline, "selector", ro.GetSelector(), "audit", true)
	return connect.NewResponse(&adminv1.StartUpgradeResponse{Rollout: ro}), nil
}

func (b *Backend) putRollout(ctx context.Context, r *storev1.Rollout) error {
	res, err := b.Store.ProposeIgnorable(ctx, storev1.CommandType_COMMAND_TYPE_PUT_ROLLOUT, &storev1.PutRollout{Rollout: r})
	if err != nil {
		return b.storeError(err)
	}
	if r, _ := res.(*storev1.FleetCommandResult); r.GetError() != "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(r.GetError()))
	}
	return nil
}

// GetUpgrade returns a rollout, the newest when no id is given.
func (f *Fleet) GetUpgrade(ctx context.Context, req *connect.Request[adminv1.GetUpgradeRequest]) (*connect.Response[adminv1.GetUpgradeResponse], error) {
	if err := f.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	rs, err := f.Store.Ledger().Rollouts()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	id := req.Msg.GetId()
	for i := len(rs) - 1; i >= 0; i-- {
		if id == "" || rs[i].GetId() == id {
			return connect.NewResponse(&adminv1.GetUpgradeResponse{Rollout: rs[i]}), nil
		}
	}
	if id == "" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no upgrade was started (crossdock agents upgrade --to VERSION)"))
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no rollout %q", id))
}

// RunRollouts steps the running rollouts every RolloutTick while this node leads, until
// ctx ends.
func (b *Backend) RunRollouts(ctx context.Context) {
	t := time.NewTicker(RolloutTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !b.Store.IsLeader() {
			b.upgrades.set(nil)
			continue
		}
		if err := b.stepRollouts(ctx, time.Now()); err != nil && ctx.Err() == nil {
			b.Logger.Warn("step agent upgrades", "err", err)
		}
	}
}

func (b *Backend) stepRollouts(ctx context.Context, now time.Time) error {
	rs, err := b.Store.Ledger().Rollouts()
	if err != nil {
		return err
	}
	sends := map[string]*uplinkv1.UpgradeCommand{}
	for _, r := range rs {
		if r.GetState() != RolloutRunning {
			continue
		}
		before := proto.Clone(r).(*storev1.Rollout)
		stepRollout(r, now, b.upgradeProgress)
		if !proto.Equal(before, r) {
			r.UpdatedAt = timestamppb.New(now)
			if err := b.putRollout(ctx, r); err != nil {
				return err
			}
			b.logRollout(before, r)
		}
		for _, a := range r.GetAgents() {
			if a.GetState() == RolloutUpgrading {
				sends[a.GetAgentId()] = upgradeCommand(r)
			}
		}
	}
	b.upgrades.set(sends)
	return nil
}

func (b *Backend) logRollout(before, after *storev1.Rollout) {
	for i, a := range after.GetAgents() {
		if was := before.GetAgents()[i].GetState(); was != a.GetState() {
			b.Logger.Info("agent upgrade", "rollout", after.GetId(), "agent", a.GetAgentId(), "version", after.GetVersion(), "state", a.GetState(), "was", was, "reason", a.GetReason())
		}
	}
	if before.GetState() != after.GetState() {
		b.Logger.Info("rollout "+after.GetState(), "rollout", after.GetId(), "version", after.GetVersion(), "reason", after.GetReason())
	}
}

// upgradeProgress is what stepRollout needs to know of an agent: the build it runs
// when connected, the build it reported last otherwise, and its last upgrade report.
type upgradeProgress struct {
	version   string
	connected bool
	report    *uplinkv1.UpgradeReport
}

func (b *Backend) upgradeProgress(agentID string) upgradeProgress {
	var p upgradeProgress
	if c, ok := b.Registry.Get(agentID); ok {
		p.version, p.connected = c.Version, true
	}
	if e, ok := b.fleet.get(agentID); ok {
		if !p.connected {
			p.version = e.version
		}
		p.report = e.upgrade
	}
	return p
}

// stepRollout moves a running rollout on by what the agents show: finishes or fails
// the agents upgrading, then starts waiting ones while fewer than max_parallel are
// upgrading. A failed agent stops the rollout. Deterministic in its inputs.
func stepRollout(r *storev1.Rollout, now time.Time, progress func(agentID string) upgradeProgress) {
	deadline := time.Duration(r.GetDeadlineMs())*time.Millisecond + RolloutGrace
	inFlight := 0
	for _, a := range r.GetAgents() {
		if a.GetState() != RolloutUpgrading {
			continue
		}
		p := progress(a.GetAgentId())
		rep := p.report
		switch {
		case p.connected && p.version == r.GetVersion():
			a.State, a.FinishedAt = RolloutDone, timestamppb.New(now)
		case rep.GetRolloutId() == r.GetId() && (rep.GetState() == UpgradeFailed || rep.GetState() == UpgradeRolledBack):
			a.State, a.Reason, a.FinishedAt = RolloutFailed, rep.GetState()+": "+rep.GetReason(), timestamppb.New(now)
		case now.Sub(a.GetStartedAt().AsTime()) > deadline:
			a.State, a.Reason, a.FinishedAt = RolloutFailed, fmt.Sprintf("not connected on %s within %s (deadline and grace)", r.GetVersion(), deadline), timestamppb.New(now)
		default:
			inFlight++
		}
		if a.GetState() == RolloutFailed {
			r.State, r.Reason = RolloutFailed, fmt.Sprintf("agent %s: %s", a.GetAgentId(), a.GetReason())
		}
	}
	if r.GetState() == RolloutFailed {
		return
	}
	for _, a := range r.GetAgents() {
		if inFlight >= int(max(r.GetMaxParallel(), 1)) {
			break
		}
		if a.GetState() != RolloutWaiting {
			continue
		}
		p := progress(a.GetAgentId())
		a.FromVersion, a.StartedAt = p.version, timestamppb.New(now)
		if p.version == r.GetVersion() {
			a.State, a.FinishedAt = RolloutSkipped, timestamppb.New(now)
			continue
		}
		a.State = RolloutUpgrading
		inFlight++
	}
	if !slices.ContainsFunc(r.GetAgents(), func(a *storev1.RolloutAgent) bool {
		return a.GetState() == RolloutWaiting || a.GetState() == RolloutUpgrading
	}) {
		r.State = RolloutDone
	}
}

// pushUpgrades sends the agent of a stream its upgrade command when its turn comes,
// once per stream, until ctx ends. An agent that already answered the rollout is not
// sent it again.
func (u *Uplink) pushUpgrades(ctx context.Context, agentID, version string, send func(*uplinkv1.StreamResponse) error, log *slog.Logger) {
	t := time.NewTicker(RolloutTick)
	defer t.Stop()
	sent := ""
	for {
		if c := u.upgrades.get(agentID); c != nil && c.GetRolloutId() != sent && c.GetVersion() != version {
			e, _ := u.fleet.get(agentID)
			if e.upgrade.GetRolloutId() != c.GetRolloutId() {
				if err := send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Upgrade{Upgrade: c}}); err != nil {
					return
				}
				log.Info("agent upgrade command sent", "rollout", c.GetRolloutId(), "version", c.GetVersion(), "sha256", c.GetSha256())
			}
			sent = c.GetRolloutId()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
