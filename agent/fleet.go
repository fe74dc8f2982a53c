package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/config"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/platform/fsutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Central configuration (docs/fleet.md): the control plane sends the AgentConfig
// document that selects this agent down the uplink stream; the agent checks it the way
// it checks its config file (the plugins asked to check their settings), applies it by
// restarting only the connectors that changed, keeps it in its data dir so that it
// starts with it offline, and reports the version it runs or why the newest failed.
// A config that fails leaves the last good one running.

// Config report states (ConfigReport.state).
const (
	ConfigApplied = "applied"
	ConfigFailed  = "failed"
	ConfigLocal   = "local"
)

// centralConfigFile holds the last central configuration applied, in the data dir.
const centralConfigFile = "central-config.json"

// savedConfig is what centralConfigFile holds: the document's agent config YAML, with
// its secrets still references.
type savedConfig struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	YAML    string `json:"yaml"`
}

// fleet is the agent's central configuration state.
type fleet struct {
	mu     sync.Mutex
	report *uplinkv1.ConfigReport
	next   chan *uplinkv1.AgentConfigPush // the newest push not yet applied
}

func newFleet() *fleet {
	return &fleet{report: &uplinkv1.ConfigReport{}, next: make(chan *uplinkv1.AgentConfigPush, 1)}
}

// offer keeps only the newest push: one still waiting is replaced. Called from the
// uplink's receive loop, so it never blocks.
func (f *fleet) offer(p *uplinkv1.AgentConfigPush) {
	for {
		select {
		case f.next <- p:
			return
		default:
		}
		select {
		case <-f.next:
		default:
		}
	}
}

func (f *fleet) set(fn func(r *uplinkv1.ConfigReport)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := proto.Clone(f.report).(*uplinkv1.ConfigReport)
	fn(r)
	f.report = r
}

// Report is the agent's configuration report, as sent to the control plane.
func (f *fleet) Report() *uplinkv1.ConfigReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.report
}

// ConfigReport is what the agent reports about its central configuration.
func (a *Agent) ConfigReport() *uplinkv1.ConfigReport { return a.fleet.Report() }

// fleetReport gives the uplink the configuration report and the agent's health.
func (a *Agent) fleetReport() (*uplinkv1.ConfigReport, *uplinkv1.AgentHealth) {
	return a.fleet.Report(), a.health()
}

// health is the outbox backlog and the occurred_at of its oldest pending event.
func (a *Agent) health() *uplinkv1.AgentHealth {
	st := a.outbox.Stats()
	h := &uplinkv1.AgentHealth{PendingEvents: st.PendingEvents, PendingBytes: st.PendingBytes}
	if st.FirstSeq == 0 {
		return h
	}
	es, err := a.outbox.Read(st.FirstSeq, 1, 4<<20)
	if err != nil || len(es) == 0 {
		return h
	}
	ev := &eventv1.Event{}
	if err := proto.Unmarshal(es[0].Data, ev); err == nil {
		h.OldestPending = ev.GetOccurredAt()
	}
	return h
}

// loadSavedConfig installs the last central configuration applied, before Run, so an
// agent restarted without a connection to the control plane runs what it ran.
func (a *Agent) loadSavedConfig(ctx context.Context) {
	if a.cfg.LocalConfig {
		return
	}
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, centralConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var sc savedConfig
	if err == nil {
		err = json.Unmarshal(b, &sc)
	}
	if err != nil {
		a.logger.Error("the saved central configuration cannot be read; the agent waits for the control plane to send it", "file", centralConfigFile, "err", err)
		return
	}
	a.applyCentral(ctx, &uplinkv1.AgentConfigPush{Name: sc.Name, Version: sc.Version, Yaml: sc.YAML}, false)
}

// runFleet applies the configurations the control plane sends until ctx ends.
func (a *Agent) runFleet(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-a.fleet.next:
			a.applyPush(ctx, p)
			a.host.Notify() // the uplink sends the report with the connectors' states
		}
	}
}

func (a *Agent) applyPush(ctx context.Context, p *uplinkv1.AgentConfigPush) {
	switch {
	case p.GetNone() || p.GetName() == "":
		// Nothing selects the agent (any more): it keeps what it runs.
		a.fleet.set(func(r *uplinkv1.ConfigReport) {
			r.Name, r.Version, r.State, r.Error, r.Restarted = "", 0, "", p.GetConflict(), nil
		})
		if p.GetConflict() != "" {
			a.logger.Warn("no central configuration chosen for this agent", "reason", p.GetConflict())
		}
	case a.cfg.LocalConfig:
		a.fleet.set(func(r *uplinkv1.ConfigReport) {
			r.Name, r.Version, r.State, r.Error, r.Restarted = p.GetName(), p.GetVersion(), ConfigLocal, "", nil
		})
		a.logger.Info("central configuration not applied: this agent's config file lists its connectors, and the local file wins", "config", p.GetName(), "version", p.GetVersion())
	default:
		cur := a.fleet.Report()
		if cur.GetRunningName() == p.GetName() && cur.GetRunningVersion() == p.GetVersion() && cur.GetName() == p.GetName() && cur.GetVersion() == p.GetVersion() && cur.GetState() == ConfigApplied {
			return // already running it (a reconnect)
		}
		a.applyCentral(ctx, p, true)
	}
}

// applyCentral checks and applies one central configuration; on failure the running one
// stays and the report says why.
func (a *Agent) applyCentral(ctx context.Context, p *uplinkv1.AgentConfigPush, save bool) {
	log := a.logger.With("config", p.GetName(), "version", p.GetVersion())
	started, err := a.installCentral(ctx, p)
	if err != nil {
		msg := fmt.Sprintf("agentconfigs/%s version %d: %v", p.GetName(), p.GetVersion(), err)
		a.fleet.set(func(r *uplinkv1.ConfigReport) {
			r.Name, r.Version, r.State, r.Error, r.Restarted = p.GetName(), p.GetVersion(), ConfigFailed, msg, nil
		})
		log.Error("central configuration refused; the last good one keeps running", "err", err)
		return
	}
	if save {
		b, err := json.Marshal(savedConfig{Name: p.GetName(), Version: p.GetVersion(), YAML: p.GetYaml()})
		if err == nil {
			err = fsutil.WriteFileAtomic(a.cfg.DataDir, centralConfigFile, b, 0o600)
		}
		if err != nil {
			// Applied, but a restart without the control plane starts with the previous one.
			log.Error("save the central configuration", "err", err)
		}
	}
	a.fleet.set(func(r *uplinkv1.ConfigReport) {
		r.RunningName, r.RunningVersion = p.GetName(), p.GetVersion()
		r.Name, r.Version, r.State, r.Error, r.Restarted = p.GetName(), p.GetVersion(), ConfigApplied, "", started
	})
	log.Info("central configuration applied", "restarted", started)
}

// hostOnlySettings are the agent settings a central configuration may not set: how the
// agent finds the control plane and its data stay on its host.
func hostOnlySettings(ag config.Agent) string {
	switch {
	case ag.Name != "":
		return "name"
	case ag.DataDir != "":
		return "data_dir"
	case len(ag.Servers) > 0:
		return "servers"
	case ag.EnrollToken != "":
		return "enroll_token"
	case ag.LocalAddr != "":
		return "local_addr"
	case ag.NoQUIC != nil:
		return "no_quic"
	case ag.QuotaBytes != 0:
		return "quota"
	}
	return ""
}

func (a *Agent) installCentral(ctx context.Context, p *uplinkv1.AgentConfigPush) ([]string, error) {
	env := config.OSEnv
	if a.cfg.ConfigEnv != nil {
		env = *a.cfg.ConfigEnv
	}
	fc, err := config.Parse([]byte(p.GetYaml()), env)
	if err != nil {
		return nil, err
	}
	if k := hostOnlySettings(fc.Agent); k != "" {
		return nil, fmt.Errorf("agent.%s: set on the agent's host only, not centrally", k)
	}
	var limit int64
	if fc.Agent.MemoryLimit != "" {
		if limit, err = config.ParseBytes(fc.Agent.MemoryLimit); err != nil {
			return nil, fmt.Errorf("agent.memory_limit: %w", err)
		}
	}
	conns := make([]pluginhost.Connector, 0, len(fc.Connectors))
	for i, c := range fc.Connectors {
		if c.Builtin != "" && a.cfg.Builtins != nil && !a.cfg.Builtins(c.Builtin) {
			return nil, fmt.Errorf("connectors[%d].builtin: this agent has no built-in connector %q", i, c.Builtin)
		}
		conns = append(conns, ConnectorFromConfig(c))
	}
	started, _, err := a.host.Reconfigure(ctx, conns)
	if err != nil {
		return nil, err
	}
	a.uplink.SetTuning(fc.Agent.Batch, fc.Agent.Window)
	if limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
	return started, nil
}

// ConnectorFromConfig is a config file's connector as the plugin host runs it.
func ConnectorFromConfig(c config.Connector) pluginhost.Connector {
	return pluginhost.Connector{
		Name: c.Name, Builtin: c.Builtin, Path: c.Path, SHA256: c.SHA256, Settings: c.Settings,
		NoSource: c.Source != nil && !*c.Source,
	}
}
