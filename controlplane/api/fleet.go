package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/labels"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Fleet: the central configuration of agents (AgentConfig documents, chosen per agent
// and sent down its stream) and what agents report about it and their backlog.

// fleetState is what the agents streaming to this node reported, in memory like the
// connector reports: live status, re-sent by every agent at every connect.
type fleetState struct {
	mu sync.Mutex
	m  map[string]*fleetEntry
}

type fleetEntry struct {
	version     string
	report      *uplinkv1.ConfigReport
	health      *uplinkv1.AgentHealth
	upgrade     *uplinkv1.UpgradeReport // rollout.go
	lastContact time.Time
}

func (f *fleetState) update(agentID string, fn func(e *fleetEntry)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*fleetEntry{}
	}
	e := f.m[agentID]
	if e == nil {
		e = &fleetEntry{}
		f.m[agentID] = e
	}
	fn(e)
}

func (f *fleetState) get(agentID string) (fleetEntry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[agentID]
	if !ok {
		return fleetEntry{}, false
	}
	return *e, true
}

// FleetConfigCheck is how often an agent's stream checks whether its configuration
// changed (a document applied, labels set): at most this long until it is sent.
var FleetConfigCheck = 500 * time.Millisecond

// chosenConfig is the AgentConfig chosen for one agent.
type chosenConfig struct {
	name     string
	version  uint64
	yaml     string
	conflict string
}

func (c chosenConfig) push() *uplinkv1.AgentConfigPush {
	return &uplinkv1.AgentConfigPush{Name: c.name, Version: c.version, Yaml: c.yaml, None: c.name == "", Conflict: c.conflict}
}

// agentConfigs are the live AgentConfig documents, parsed.
type agentConfigs struct {
	docs []*routing.Document
	recs []*storev1.DocumentRecord
}

func (b *Backend) loadAgentConfigs() (*agentConfigs, error) {
	recs, err := b.Store.Ledger().Documents(string(routing.KindAgentConfig))
	if err != nil {
		return nil, err
	}
	out := &agentConfigs{}
	for _, rec := range recs {
		d, err := routing.FromRecord(rec)
		if err != nil {
			return nil, err
		}
		out.docs, out.recs = append(out.docs, d), append(out.recs, rec)
	}
	return out, nil
}

// choose picks the document for an agent: one that names it beats one that selects it
// by labels, and among label selectors the one with more labels wins; a tie is a
// conflict and nothing is chosen.
func (ac *agentConfigs) choose(agentID string, agentLabels map[string]string) chosenConfig {
	type cand struct {
		i     int
		score int
	}
	var cs []cand
	for i, d := range ac.docs {
		s := d.AgentConfig.Selects(agentID, agentLabels)
		if s == 0 {
			continue
		}
		score := s * 1000
		if s == 1 {
			score += len(d.AgentConfig.Selector.Labels)
		}
		cs = append(cs, cand{i, score})
	}
	if len(cs) == 0 {
		return chosenConfig{}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].score > cs[j].score })
	if len(cs) > 1 && cs[0].score == cs[1].score {
		var names []string
		for _, c := range cs {
			if c.score == cs[0].score {
				names = append(names, ac.docs[c.i].Name())
			}
		}
		return chosenConfig{conflict: fmt.Sprintf("agentconfigs %s select this agent equally; name the agent in one (selector.agents) or make one selector more specific", strings.Join(names, ", "))}
	}
	d, rec := ac.docs[cs[0].i], ac.recs[cs[0].i]
	y, err := d.AgentConfig.AgentYAML()
	if err != nil {
		return chosenConfig{conflict: err.Error()}
	}
	return chosenConfig{name: d.Name(), version: rec.GetVersion(), yaml: string(y)}
}

// pushConfigs sends an agent its configuration after Welcome and whenever it changes,
// until ctx ends.
func (u *Uplink) pushConfigs(ctx context.Context, agentID string, send func(*uplinkv1.StreamResponse) error, log *slog.Logger) {
	t := time.NewTicker(FleetConfigCheck)
	defer t.Stop()
	var (
		sent    *chosenConfig
		lastRev uint64
	)
	for {
		rev, err := u.Store.Ledger().FleetRevision()
		if err == nil && (sent == nil || rev != lastRev) {
			c, err := u.configFor(agentID)
			if err != nil {
				log.Error("choose the agent's configuration", "err", err)
			} else {
				lastRev = rev
				if sent == nil || c.name != sent.name || c.version != sent.version || c.conflict != sent.conflict {
					if err := send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Config{Config: c.push()}}); err != nil {
						return
					}
					log.Info("agent configuration sent", "config", c.name, "version", c.version, "conflict", c.conflict)
				}
				sent = &c
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// configFor chooses an agent's configuration from the stored documents and labels.
func (b *Backend) configFor(agentID string) (chosenConfig, error) {
	lbls, err := b.Store.Ledger().LabelsOf(agentID)
	if err != nil {
		return chosenConfig{}, err
	}
	ac, err := b.loadAgentConfigs()
	if err != nil {
		return chosenConfig{}, err
	}
	return ac.choose(agentID, lbls), nil
}

// Fleet serves FleetService.
type Fleet struct {
	*Backend
	// Admin renders agents' records as AdminService does.
	Admin *Admin
}

var _ adminv1connect.FleetServiceHandler = (*Fleet)(nil)

// ListFleet lists agents with what they reported: version, configuration, backlog.
func (f *Fleet) ListFleet(ctx context.Context, req *connect.Request[adminv1.ListFleetRequest]) (*connect.Response[adminv1.ListFleetResponse], error) {
	sel, err := labels.Parse(req.Msg.GetSelector())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("selector: %w", err))
	}
	if id := req.Msg.GetId(); id != "" && !canonical.ValidName(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: %q is not an agent id", id))
	}
	if err := f.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	recs, err := f.Store.Ledger().Agents()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	all, err := f.Store.Ledger().AgentLabels()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	ac, err := f.loadAgentConfigs()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &adminv1.ListFleetResponse{}
	for _, r := range recs {
		id := r.GetId()
		if req.Msg.GetId() != "" && id != req.Msg.GetId() {
			continue
		}
		if !labels.Matches(sel, all[id]) {
			continue
		}
		fa := &adminv1.FleetAgent{Agent: f.Admin.agentInfo(r), Labels: all[id]}
		c := ac.choose(id, all[id])
		fa.ConfigName, fa.ConfigVersion, fa.ConfigConflict = c.name, c.version, c.conflict
		if e, ok := f.fleet.get(id); ok {
			fa.Version = e.version
			if !e.lastContact.IsZero() {
				fa.LastContact = timestamppb.New(e.lastContact)
			}
			if rep := e.report; rep != nil {
				fa.RunningName, fa.RunningVersion, fa.ConfigError, fa.Restarted = rep.GetRunningName(), rep.GetRunningVersion(), rep.GetError(), rep.GetRestarted()
				fa.ConfigState = rep.GetState()
			}
			if h := e.health; h != nil {
				fa.PendingEvents, fa.PendingBytes, fa.OldestPending = h.GetPendingEvents(), h.GetPendingBytes(), h.GetOldestPending()
			}
		}
		fa.ConfigState = configState(fa)
		out.Agents = append(out.Agents, fa)
	}
	return connect.NewResponse(out), nil
}

// configState is the state shown for an agent's configuration: what it reported about
// the version chosen for it, or "pending" while it has not answered for that version.
func configState(fa *adminv1.FleetAgent) string {
	switch {
	case fa.GetConfigName() == "" && fa.GetConfigConflict() != "":
		return "conflict"
	case fa.GetConfigName() == "":
		if fa.GetRunningName() != "" {
			return "unassigned" // it keeps running what it was sent last
		}
		return ""
	case fa.GetConfigState() == "local":
		return "local"
	case fa.GetConfigState() == "failed":
		return "failed"
	case fa.GetRunningName() == fa.GetConfigName() && fa.GetRunningVersion() == fa.GetConfigVersion() && fa.GetConfigState() == "applied":
		return "applied"
	}
	return "pending"
}

// SetAgentLabels replaces an agent's labels through raft.
func (f *Fleet) SetAgentLabels(ctx context.Context, req *connect.Request[adminv1.SetAgentLabelsRequest]) (*connect.Response[adminv1.SetAgentLabelsResponse], error) {
	id := req.Msg.GetId()
	if !canonical.ValidName(id) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id: %q is not an agent id", id))
	}
	if err := labels.Check(req.Msg.GetLabels()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("labels: %w", err))
	}
	if err := f.setLabels(ctx, id, req.Msg.GetLabels(), actor(req.Header())); err != nil {
		return nil, err
	}
	f.Logger.Info("agent labels set", "agent", id, "labels", labels.String(req.Msg.GetLabels()), "audit", true)
	return connect.NewResponse(&adminv1.SetAgentLabelsResponse{Labels: req.Msg.GetLabels()}), nil
}

func (b *Backend) setLabels(ctx context.Context, agentID string, l map[string]string, who string) error {
	if !b.Store.IsLeader() {
		return b.notLeader()
	}
	res, err := b.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_SET_AGENT_LABELS, &storev1.SetAgentLabels{
		AgentId: agentID, Labels: l, Actor: who, At: timestamppb.Now(),
	})
	if err != nil {
		return b.storeError(err)
	}
	if r, _ := res.(*storev1.FleetCommandResult); r.GetError() != "" {
		code := connect.CodeInvalidArgument
		if strings.Contains(r.GetError(), "no such agent") {
			code = connect.CodeNotFound
		}
		return connect.NewError(code, errors.New(r.GetError()))
	}
	return nil
}

// fleetMessage notes the contact and keeps a configuration report or health; it
// reports whether msg was one of those.
func (r *receiver) fleetMessage(msg *uplinkv1.StreamRequest) bool {
	now := time.Now()
	rep, health, up := msg.GetConfigReport(), msg.GetHealth(), msg.GetUpgradeReport()
	if up != nil {
		lvl := slog.LevelInfo
		if up.GetState() != UpgradeUpgraded {
			lvl = slog.LevelWarn
		}
		r.log.Log(context.Background(), lvl, "agent upgrade report", "rollout", up.GetRolloutId(), "version", up.GetVersion(), "state", up.GetState(), "reason", up.GetReason())
	}
	r.u.fleet.update(r.agentID, func(e *fleetEntry) {
		e.lastContact = now
		if up != nil {
			e.upgrade = up
		}
		if rep != nil {
			if rep.GetState() == "failed" && (e.report.GetState() != "failed" || e.report.GetVersion() != rep.GetVersion()) {
				r.log.Warn("agent refused its configuration; it keeps running the last good one", "config", rep.GetName(), "version", rep.GetVersion(), "err", rep.GetError())
			}
			e.report = rep
		}
		if health != nil {
			e.health = health
		}
	})
	return rep != nil || health != nil || up != nil
}
