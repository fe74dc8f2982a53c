// Package pluginhost runs the agent's connector plugins: each one a go-plugin subprocess
// spoken to over gRPC (plugins/sdk). It launches them, pipes their logs into the agent's
// log, restarts a crashed plugin with exponential backoff, and keeps every connector's
// state for agent status.
//
// A source's batches go into the outbox with the source position in the same
// transaction, and only then is the position acknowledged to the plugin. A plugin that
// crashes is restarted from the last committed position, so no batch is lost and none is
// appended twice: a batch is either wholly committed with its position, or not at all.
// The one exception is a batch larger than one outbox transaction (outbox.MaxBatchRecords
// or half the quota): it is appended in parts with the position on the last part only,
// and if the agent itself dies between parts the parts before are appended again after
// the restart, with the same event ids, which the control plane drops as duplicates.
//
// An event the agent refuses (canonical.Validate) stalls its connector: the whole batch
// is refused, nothing of it and nothing after it is appended, the position does not
// move, and the state says "stalled" with the position and the reason. The agent retries
// with backoff, so a source whose data is fixed resumes by itself; nothing is skipped.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/platform/ratelog"
	"github.com/crossdock/crossdock/internal/platform/slogh"
	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/internal/wire"
	"github.com/crossdock/crossdock/plugins/sdk"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Errors of the host. A connector that fails with ErrChecksum, ErrProtocol or a
// *sdk.ConfigError is not restarted (state "failed") until the agent restarts.
var (
	// ErrChecksum: the plugin binary's SHA-256 is not the one configured.
	ErrChecksum = errors.New("plugin checksum mismatch")
	// ErrProtocol: the binary is not a Crossdock plugin or speaks another protocol version.
	ErrProtocol = errors.New("plugin protocol mismatch")
	// ErrMissing: the plugin binary does not exist or is not a file. Check refuses it;
	// at run time it is retried with backoff (the file may come back).
	ErrMissing = errors.New("plugin binary not found")
	// ErrInvalidEvent: the source emitted an event that fails validation.
	ErrInvalidEvent = errors.New("source emitted an invalid event")
	// ErrNotRunning: Write was called on a connector whose plugin is not running.
	ErrNotRunning = errors.New("connector not running")
	// ErrUnknown: no connector of that name.
	ErrUnknown = errors.New("unknown connector")
)

// Connector states (ConnectorStatus.state).
const (
	StateStarting   = "starting"
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateStalled    = "stalled"
	StateFailed     = "failed"
	StateStopped    = "stopped"
)

// PositionPrefix prefixes a connector's name to make its outbox position name.
const PositionPrefix = "connector/"

// Connector is one configured connector.
type Connector struct {
	// Name is unique within the agent; it is part of every event id.
	Name string
	// Builtin is a built-in connector type, run as `<Self> plugin <Builtin>`.
	Builtin string
	// Path and SHA256 (hex) name an external plugin binary; the checksum is verified
	// before every launch.
	Path, SHA256 string
	// Settings is the connector's settings object as JSON, secrets resolved.
	Settings []byte
	// NoSource turns off capture for a plugin that is both a source and a sink.
	NoSource bool
}

// Options configure a Host.
type Options struct {
	// AgentID is part of every event id.
	AgentID string
	Outbox  *outbox.Outbox
	// Self is the executable that serves built-ins (`Self plugin <type>`); the running
	// executable when empty.
	Self   string
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the restart delay (1s and 1m when zero); it doubles
	// with each consecutive failure.
	MinBackoff, MaxBackoff time.Duration
	// ProtocolVersion overrides sdk.ProtocolVersion; tests use it to stage a mismatch.
	ProtocolVersion uint
	// HealthInterval is how often a running plugin's Health is checked (30s when 0).
	HealthInterval time.Duration
	// ConfigureTimeout bounds a plugin's Spec and Configure calls (1m when 0).
	ConfigureTimeout time.Duration
}

// Host runs connectors.
type Host struct {
	opts Options
	log  *slog.Logger
	logs *ratelog.Limiter // stall and restart lines per connector

	// cmu guards the connector set, which Reconfigure replaces while Run runs.
	cmu    sync.RWMutex
	conns  []*conn
	byName map[string]*conn
	runCtx context.Context // set while Run runs
	runWG  sync.WaitGroup

	// reconfMu serialises Reconfigure calls.
	reconfMu sync.Mutex

	mu      sync.Mutex
	changed chan struct{}
}

// conn is one connector's supervisor state.
type conn struct {
	cfg  Connector
	kind string // "builtin:<type>" or the path
	log  *slog.Logger

	// stop ends this connector's supervisor and done closes when it returned; set
	// when it is started.
	stop context.CancelFunc
	done chan struct{}

	mu        sync.Mutex
	state     string
	lastErr   string
	attempt   uint32
	restarts  uint32
	since     time.Time
	next      time.Time
	position  string
	captured  uint64
	spec      sdk.Spec
	pid       int
	rpc       *sdk.Client // while running
	healthErr string
	healthAt  time.Time
}

// New checks the connectors and returns a host; Run starts them.
func New(opts Options, connectors []Connector) (*Host, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.ConfigureTimeout <= 0 {
		opts.ConfigureTimeout = time.Minute
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 30 * time.Second
	}
	if opts.ProtocolVersion == 0 {
		opts.ProtocolVersion = sdk.ProtocolVersion
	}
	if opts.Outbox == nil {
		return nil, errors.New("pluginhost: an outbox is required")
	}
	if opts.Self == "" && hasBuiltin(connectors) {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("pluginhost: find own executable for built-in connectors: %w", err)
		}
		opts.Self = self
	}
	h := &Host{opts: opts, log: opts.Logger, logs: ratelog.New(0, 0), byName: map[string]*conn{}, changed: make(chan struct{})}
	conns, err := h.newConns(connectors)
	if err != nil {
		return nil, err
	}
	h.conns = conns
	for _, c := range conns {
		h.byName[c.cfg.Name] = c
	}
	return h, nil
}

// newConns checks a connector list and makes their (not started) supervisor states.
func (h *Host) newConns(connectors []Connector) ([]*conn, error) {
	now := time.Now()
	seen := map[string]bool{}
	var out []*conn
	for i, c := range connectors {
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("pluginhost: connectors[%d].name: required", i)
		case seen[c.Name]:
			return nil, fmt.Errorf("pluginhost: connectors[%d].name: %q is used twice", i, c.Name)
		case (c.Builtin == "") == (c.Path == ""):
			return nil, fmt.Errorf("pluginhost: connectors[%d]: set either builtin or path", i)
		case c.Path != "" && c.SHA256 == "":
			return nil, fmt.Errorf("pluginhost: connectors[%d].sha256: required with path", i)
		}
		seen[c.Name] = true
		kind := c.Path
		if c.Builtin != "" {
			kind = "builtin:" + c.Builtin
		}
		out = append(out, &conn{cfg: c, kind: kind, log: h.log.With("connector", c.Name), state: StateStarting, since: now})
	}
	return out, nil
}

// Check launches every plugin once, asks for its spec and configures it, so an agent
// refuses to start with settings a plugin rejects, a wrong checksum or a plugin of
// another protocol version. The error names the connector's place in the config
// ("connectors[1].settings.dsn: required"). Other failures (a system not reachable
// yet) are logged and left to Run, which retries.
func (h *Host) Check(ctx context.Context) error {
	h.cmu.RLock()
	conns := h.conns
	h.cmu.RUnlock()
	return h.checkConns(ctx, conns, nil)
}

// checkConns checks conns (at their index in the configuration); skip names the
// indexes not to check (unchanged connectors that run already).
func (h *Host) checkConns(ctx context.Context, conns []*conn, skip map[int]bool) error {
	for i, c := range conns {
		if skip[i] {
			continue
		}
		err := h.check(ctx, c)
		var ce *sdk.ConfigError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			return fmt.Errorf("connectors[%d].settings.%s: %s", i, ce.Field, ce.Reason)
		case errors.Is(err, ErrChecksum), errors.Is(err, ErrProtocol), errors.Is(err, ErrMissing):
			return fmt.Errorf("connectors[%d] (%s): %w", i, c.cfg.Name, err)
		default:
			c.log.Warn("connector check failed; it will be retried", "err", err)
		}
	}
	return nil
}

func (h *Host) check(ctx context.Context, c *conn) error {
	client, rpc, err := h.launch(ctx, c)
	if client != nil {
		defer client.Kill()
	}
	if err != nil {
		return err
	}
	_, err = h.configure(ctx, rpc, c)
	return err
}

// configure asks for the spec and configures the plugin, within ConfigureTimeout.
func (h *Host) configure(ctx context.Context, rpc *sdk.Client, c *conn) (sdk.Spec, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.ConfigureTimeout)
	defer cancel()
	spec, err := rpc.Spec(ctx)
	if err != nil {
		return spec, err
	}
	if err := rpc.Configure(ctx, c.cfg.Settings); err != nil {
		if ctx.Err() != nil {
			return spec, fmt.Errorf("configure took longer than %s: %w", h.opts.ConfigureTimeout, err)
		}
		return spec, err
	}
	return spec, nil
}

func hasBuiltin(cs []Connector) bool {
	for _, c := range cs {
		if c.Builtin != "" {
			return true
		}
	}
	return false
}

// Run supervises every connector until ctx is done, then stops the plugins and returns.
// A connector's failure never ends Run. Reconfigure may change the connectors meanwhile.
func (h *Host) Run(ctx context.Context) {
	h.cmu.Lock()
	h.runCtx = ctx
	for _, c := range h.conns {
		h.startLocked(c)
	}
	h.cmu.Unlock()
	<-ctx.Done()
	h.runWG.Wait()
}

// startLocked starts c's supervisor under the Run context; h.cmu is held.
func (h *Host) startLocked(c *conn) {
	ctx, stop := context.WithCancel(h.runCtx)
	c.stop, c.done = stop, make(chan struct{})
	h.runWG.Add(1)
	go func() {
		defer h.runWG.Done()
		defer close(c.done)
		h.supervise(ctx, c)
	}()
}

// Reconfigure replaces the connector set with connectors: it checks every new or
// changed connector first (launch, spec, configure: the checks of Check, the plugin
// asked to check its settings) and changes nothing if one fails; then it stops removed
// and changed connectors and starts changed and new ones. Unchanged connectors keep
// running untouched. A restarted source resumes from its committed position (kept in
// the outbox under its name). It returns the names of the connectors started or
// restarted, and of those stopped.
func (h *Host) Reconfigure(ctx context.Context, connectors []Connector) (started, stopped []string, err error) {
	h.reconfMu.Lock()
	defer h.reconfMu.Unlock()
	next, err := h.newConns(connectors)
	if err != nil {
		return nil, nil, err
	}
	if h.opts.Self == "" && hasBuiltin(connectors) {
		self, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("pluginhost: find own executable for built-in connectors: %w", err)
		}
		h.opts.Self = self
	}
	h.cmu.RLock()
	old := h.byName
	h.cmu.RUnlock()
	keep := map[int]bool{}
	for i, c := range next {
		if o, ok := old[c.cfg.Name]; ok && sameConnector(o.cfg, c.cfg) {
			keep[i] = true
			next[i] = o
		}
	}
	if err := h.checkConns(ctx, next, keep); err != nil {
		return nil, nil, err
	}
	kept := map[*conn]bool{}
	for i := range keep {
		kept[next[i]] = true
	}
	h.cmu.Lock()
	prev := h.conns
	var toStop []*conn
	for _, o := range prev {
		if !kept[o] {
			toStop = append(toStop, o)
			stopped = append(stopped, o.cfg.Name)
		}
	}
	h.cmu.Unlock()
	// Stopped before their successors start: a source's position is written by one
	// reader at a time.
	for _, o := range toStop {
		if o.stop != nil {
			o.stop()
			<-o.done
		}
	}
	h.cmu.Lock()
	h.conns = next
	h.byName = make(map[string]*conn, len(next))
	for i, c := range next {
		h.byName[c.cfg.Name] = c
		if !keep[i] {
			started = append(started, c.cfg.Name)
			if h.runCtx != nil && h.runCtx.Err() == nil {
				h.startLocked(c)
			}
		}
	}
	h.cmu.Unlock()
	h.notify()
	for _, n := range stopped {
		h.log.Info("connector stopped by a configuration change", "connector", n)
	}
	return started, stopped, nil
}

// sameConnector reports whether two configurations of a connector run the same thing.
func sameConnector(a, b Connector) bool {
	return a.Name == b.Name && a.Builtin == b.Builtin && a.Path == b.Path &&
		strings.EqualFold(a.SHA256, b.SHA256) && a.NoSource == b.NoSource && string(a.Settings) == string(b.Settings)
}

// Changed returns a channel closed at the next change of any connector's state (not at
// every committed batch).
func (h *Host) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// Notify fires Changed without a state change (the agent's configuration report
// changed; it travels with the connectors' states).
func (h *Host) Notify() { h.notify() }

func (h *Host) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.changed)
	h.changed = make(chan struct{})
}

// Status describes every connector, in configuration order.
func (h *Host) Status() []*agentv1.ConnectorStatus {
	h.cmu.RLock()
	conns := h.conns
	h.cmu.RUnlock()
	out := make([]*agentv1.ConnectorStatus, 0, len(conns))
	for _, c := range conns {
		c.mu.Lock()
		st := &agentv1.ConnectorStatus{
			Name: c.cfg.Name, Plugin: c.kind, State: c.state, LastError: c.lastErr,
			Attempt: c.attempt, Restarts: c.restarts, StateSince: timestamppb.New(c.since),
			Position: c.position, EventsCaptured: c.captured, Version: c.spec.Version,
			Source: c.spec.Source, Sink: c.spec.Sink, Pid: int32(c.pid), HealthError: c.healthErr,
		}
		if !c.healthAt.IsZero() {
			st.HealthCheckedAt = timestamppb.New(c.healthAt)
		}
		if !c.next.IsZero() {
			st.NextAttempt = timestamppb.New(c.next)
		}
		c.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Write writes events through a connector's sink and returns one result per event. The
// connector must be running; after a crash, retry once it is running again.
func (h *Host) Write(ctx context.Context, connector string, events []*eventv1.Event) ([]sdk.WriteResult, error) {
	h.cmu.RLock()
	c := h.byName[connector]
	h.cmu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("pluginhost: write to %q: %w", connector, ErrUnknown)
	}
	c.mu.Lock()
	rpc, state, sink := c.rpc, c.state, c.spec.Sink
	c.mu.Unlock()
	if rpc == nil {
		return nil, fmt.Errorf("pluginhost: write to %q: %w (state %s)", connector, ErrNotRunning, state)
	}
	if !sink {
		return nil, sdk.Permanent(fmt.Errorf("pluginhost: write to %q: the plugin is not a sink", connector))
	}
	res, err := rpc.Write(ctx, events)
	if err != nil {
		return nil, fmt.Errorf("pluginhost: write to %q: %w", connector, err)
	}
	return res, nil
}

func (h *Host) set(c *conn, f func(c *conn)) {
	c.mu.Lock()
	f(c)
	c.mu.Unlock()
	h.notify()
}

func (h *Host) supervise(ctx context.Context, c *conn) {
	for {
		progressed, err := h.runOnce(ctx, c)
		if ctx.Err() != nil {
			h.set(c, func(c *conn) { c.state, c.since, c.next, c.rpc, c.pid = StateStopped, time.Now(), time.Time{}, nil, 0 })
			c.log.Info("connector stopped")
			return
		}
		var ce *sdk.ConfigError
		if errors.As(err, &ce) || errors.Is(err, ErrChecksum) || errors.Is(err, ErrProtocol) {
			h.set(c, func(c *conn) {
				c.state, c.lastErr, c.since, c.rpc, c.pid = StateFailed, err.Error(), time.Now(), nil, 0
				if ce != nil {
					c.lastErr = fmt.Sprintf("settings.%s: %s", ce.Field, ce.Reason)
				}
			})
			c.log.Error("connector failed; fix the agent config and restart the agent", "err", err)
			return
		}
		if err == nil {
			err = errors.New("the source stopped reading")
		}
		state := StateRestarting
		if errors.Is(err, ErrInvalidEvent) {
			state = StateStalled
		}
		var delay time.Duration
		h.set(c, func(c *conn) {
			if progressed {
				c.attempt = 0
			}
			c.attempt++
			c.restarts++
			delay = h.backoff(c.attempt)
			if errors.Is(err, sdk.ErrPermanent) {
				delay = h.opts.MaxBackoff
			}
			c.state, c.lastErr, c.since, c.next, c.rpc, c.pid = state, err.Error(), time.Now(), time.Now().Add(delay), nil, 0
		})
		// A stalled connector retries the same batch forever: logged once per window
		// (ratelog), with the position it is stuck at, not at every retry.
		c.mu.Lock()
		pos, restarts := c.position, c.restarts
		c.mu.Unlock()
		h.logs.Log(c.log, slog.LevelWarn, c.cfg.Name+":"+state, "connector "+state, "position", pos, "restarts", restarts, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// backoff is MinBackoff doubled per consecutive failure, at most MaxBackoff.
func (h *Host) backoff(attempt uint32) time.Duration {
	d := h.opts.MinBackoff
	for i := uint32(1); i < attempt && d < h.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, h.opts.MaxBackoff)
}

// runOnce launches the plugin, configures it and runs it until it fails or ctx ends.
// progressed says whether it ran well (committed a batch, or stayed up a while), which
// resets the backoff.
func (h *Host) runOnce(ctx context.Context, c *conn) (progressed bool, err error) {
	client, rpc, err := h.launch(ctx, c)
	if client != nil {
		defer client.Kill()
	}
	if err != nil {
		return false, err
	}
	started := time.Now()
	spec, err := h.configure(ctx, rpc, c)
	if err != nil {
		return false, err
	}
	pid := 0
	if rc := client.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	h.set(c, func(c *conn) {
		c.state, c.since, c.next, c.spec, c.rpc, c.pid = StateRunning, time.Now(), time.Time{}, spec, rpc, pid
	})
	c.log.Info("connector running", "plugin", c.kind, "version", spec.Version, "pid", pid, "source", spec.Source && !c.cfg.NoSource, "sink", spec.Sink)
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go h.watchHealth(hctx, c, rpc)
	if spec.Source && !c.cfg.NoSource {
		n, err := h.read(ctx, c, rpc)
		return n > 0 || time.Since(started) > h.opts.MaxBackoff, err
	}
	// A sink only: wait for the end or for the process to die.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-tick.C:
			if client.Exited() {
				return time.Since(started) > h.opts.MaxBackoff, errors.New("plugin process exited")
			}
		}
	}
}

// watchHealth asks a running plugin for its health now and every HealthInterval, and
// notes the answer in the connector's status (a change of health is a state change).
func (h *Host) watchHealth(ctx context.Context, c *conn, rpc *sdk.Client) {
	t := time.NewTicker(h.opts.HealthInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, h.opts.HealthInterval)
		err := rpc.Health(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		c.mu.Lock()
		changed := msg != c.healthErr || c.healthAt.IsZero()
		c.healthErr, c.healthAt = msg, time.Now()
		c.mu.Unlock()
		if changed {
			if msg != "" {
				c.log.Warn("connector unhealthy", "err", msg)
			}
			h.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// launch starts the plugin process and connects to it.
func (h *Host) launch(ctx context.Context, c *conn) (*plugin.Client, *sdk.Client, error) {
	var cmd *exec.Cmd
	var secure *plugin.SecureConfig
	bin := c.cfg.Path
	if c.cfg.Builtin != "" {
		bin = h.opts.Self
	}
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() {
		if err == nil {
			err = errors.New("not a regular file")
		}
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrMissing, bin, err)
	}
	if c.cfg.Builtin != "" {
		cmd = exec.Command(h.opts.Self, "plugin", c.cfg.Builtin)
	} else {
		want, err := hex.DecodeString(strings.ToLower(c.cfg.SHA256))
		if err != nil || len(want) != sha256.Size {
			return nil, nil, fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrChecksum, c.cfg.SHA256)
		}
		cmd = exec.Command(c.cfg.Path)
		secure = &plugin.SecureConfig{Checksum: want, Hash: sha256.New()}
	}
	level := "info"
	if h.log.Enabled(ctx, slog.LevelDebug) {
		level = "debug"
	}
	cmd.Env = append(os.Environ(), sdk.LogLevelEnv+"="+level)
	dieWithAgent(cmd)
	// What the plugin prints to stdout/stderr after it started (not through its
	// logger) is logged too.
	stdio := slogh.New(c.log, "plugin.stdio", hclog.Info).StandardWriter(nil)
	hs := sdk.Handshake
	hs.ProtocolVersion = h.opts.ProtocolVersion
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  hs,
		Plugins:          plugin.PluginSet{sdk.PluginName: &sdk.Plugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  sdk.DialOptions(),
		Logger:           slogh.New(c.log, "plugin", hclog.Info),
		StartTimeout:     30 * time.Second,
		SyncStdout:       stdio,
		SyncStderr:       stdio,
	})
	cp, err := client.Client()
	if err != nil {
		return client, nil, launchError(c, err)
	}
	raw, err := cp.Dispense(sdk.PluginName)
	if err != nil {
		return client, nil, fmt.Errorf("%w: %s: dispense %q: %w", ErrProtocol, c.kind, sdk.PluginName, err)
	}
	rpc, ok := raw.(*sdk.Client)
	if !ok {
		return client, nil, fmt.Errorf("%w: %s: unexpected client %T", ErrProtocol, c.kind, raw)
	}
	return client, rpc, nil
}

func launchError(c *conn, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("%w: %s does not have the configured sha256 %s; a changed binary is never run: check it and update sha256 (sha256sum %s)", ErrChecksum, c.cfg.Path, c.cfg.SHA256, c.cfg.Path)
	case strings.Contains(msg, "incompatible API version"):
		return fmt.Errorf("%w: %s speaks another plugin protocol version (%s); this agent speaks version %d: rebuild the plugin against plugins/sdk of this Crossdock release", ErrProtocol, c.kind, msg, sdk.ProtocolVersion)
	case strings.Contains(msg, "Unrecognized remote plugin message"), strings.Contains(msg, "plugin exited before we could connect"):
		return fmt.Errorf("launch %s: %w (is it a Crossdock connector plugin?)", c.kind, err)
	}
	return fmt.Errorf("launch %s: %w", c.kind, err)
}

// read streams batches from the last committed position into the outbox and returns the
// number of batches committed.
func (h *Host) read(ctx context.Context, c *conn, rpc *sdk.Client) (int, error) {
	posName := PositionPrefix + c.cfg.Name
	from, _, err := h.opts.Outbox.Position(posName)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.position = from
	c.mu.Unlock()
	n := 0
	err = rpc.Read(ctx, from, func(b sdk.Batch) error {
		recs, spans, err := h.encode(ctx, c, b)
		if err != nil {
			tracing.EndAll(spans, err)
			return err
		}
		err = h.appendParts(ctx, recs, outbox.Position{Name: posName, Value: b.Position})
		tracing.EndAll(spans, err) // nil when tracing is off
		if err != nil {
			return err
		}
		n++
		// Progress is not a state change: Changed does not fire for it.
		c.mu.Lock()
		c.position, c.captured = b.Position, c.captured+uint64(len(recs))
		c.mu.Unlock()
		return rpc.Ack(ctx, b.Position)
	})
	return n, err
}

// encode validates a batch's events, gives each its deterministic id and marshals it.
// With tracing on it starts a capture span per event (ended by the caller once the
// batch is in the outbox) and carries its context in the event.
func (h *Host) encode(ctx context.Context, c *conn, b sdk.Batch) (_ [][]byte, spans []trace.Span, err error) {
	if b.Position == "" {
		return nil, nil, sdk.Permanent(fmt.Errorf("the source emitted a batch of %d events without a position", len(b.Events)))
	}
	if len(b.EventPositions) != 0 && len(b.EventPositions) != len(b.Events) {
		return nil, nil, sdk.Permanent(fmt.Errorf("batch at %q: %d events but %d event positions", b.Position, len(b.Events), len(b.EventPositions)))
	}
	now := timestamppb.Now()
	recs := make([][]byte, len(b.Events))
	for i, ev := range b.Events {
		pos := fmt.Sprintf("%s#%d", b.Position, i)
		if len(b.EventPositions) != 0 {
			pos = b.EventPositions[i]
		}
		// A connector's event is identified by its position alone: whatever id or
		// source the plugin set is replaced.
		ev.Id, ev.Source = "", &eventv1.Source{Position: pos}
		// A partner's order has the id of canonical/orderid.go whichever door it came
		// in by (EDI connector, partner API), so a resent order finds the first one.
		if o := ev.GetOrder(); o.GetPartner() != "" && o.GetPurchaseOrderNumber() != "" {
			ev.Id = canonical.OrderEventID(o.GetPartner(), o.GetPurchaseOrderNumber())
		}
		if err := canonical.Stamp(ev, h.opts.AgentID, c.cfg.Name, func() *timestamppb.Timestamp { return now }); err != nil {
			return nil, spans, fmt.Errorf("%w at position %s (event %d of the batch ending at %s): %w", ErrInvalidEvent, pos, i, b.Position, err)
		}
		if tracing.Enabled() { // after Stamp: the id does not depend on the trace
			spans = append(spans, tracing.StartEvent(ctx, tracing.SpanCapture, ev, h.opts.AgentID, c.cfg.Name))
		}
		rec := wire.AppendEvent(nil, ev)
		// Size as sent, with source and id: what the control plane checks.
		if err := canonical.CheckSize(len(rec)); err != nil {
			return nil, spans, fmt.Errorf("%w at position %s (event %d of the batch ending at %s): %w", ErrInvalidEvent, pos, i, b.Position, err)
		}
		recs[i] = rec
	}
	return recs, spans, nil
}

// appendParts appends recs with pos in one outbox transaction, or, when they exceed one,
// in parts with pos on the last part only.
func (h *Host) appendParts(ctx context.Context, recs [][]byte, pos outbox.Position) error {
	maxRecs := outbox.MaxBatchRecords - 1
	maxBytes := h.opts.Outbox.Stats().QuotaBytes / 2
	for len(recs) > 0 || pos.Name != "" {
		n, size := 0, uint64(0)
		for n < len(recs) && n < maxRecs && (n == 0 || size+uint64(len(recs[n])) <= maxBytes) {
			size += uint64(len(recs[n]))
			n++
		}
		var p []outbox.Position
		if n == len(recs) {
			p, pos = []outbox.Position{pos}, outbox.Position{}
		}
		if _, _, err := h.opts.Outbox.Append(ctx, recs[:n], p...); err != nil {
			return fmt.Errorf("append to outbox: %w", err)
		}
		recs = recs[n:]
	}
	return nil
}
