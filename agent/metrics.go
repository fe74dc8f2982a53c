package agent

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/internal/platform/metrics"
)

var (
	descUplinkConnected = metrics.Desc("agent_uplink_connected", "1 while the uplink is connected, by transport (h2, h3), else 0.", "transport")
	descCommittedSeq    = metrics.Desc("agent_committed_seq", "Highest outbox seq the control plane acknowledged as committed.")
	descPendingEvents   = metrics.Desc("agent_outbox_pending_events", "Events in the outbox not yet acknowledged by the control plane.")
	descPendingBytes    = metrics.Desc("agent_outbox_pending_bytes", "Bytes of pending events (counted against the quota).")
	descQuotaBytes      = metrics.Desc("agent_outbox_quota_bytes", "Outbox quota for pending events (--quota).")
	descLastSeq         = metrics.Desc("agent_outbox_last_seq", "Highest seq appended to the outbox.")
	descBlocked         = metrics.Desc("agent_outbox_blocked", "1 while publishers wait because the outbox is full (quota or disk) or failed, else 0.")
	descOldest          = metrics.Desc("agent_outbox_oldest_pending_age_seconds", "Age of the oldest pending event, measured from the first scrape that saw it in the outbox (at most since the agent started); 0 when nothing is pending.")
	descConnState       = metrics.Desc("agent_connector_state", "1 for a connector's current state (starting, running, restarting, stalled, failed, stopped), 0 for the others.", "connector", "state")
	descCaptured        = metrics.Desc("agent_connector_captured_events_total", "Events a connector captured into the outbox since the agent started.", "connector")
	descRestarts        = metrics.Desc("agent_connector_restarts_total", "Connector restarts since the agent started.", "connector")
	descConflicts       = metrics.Desc("agent_conflicts_total", "Events the control plane refused since the agent started: their id was committed before with other content.")
)

var connectorStates = []string{pluginhost.StateStarting, pluginhost.StateRunning, pluginhost.StateRestarting, pluginhost.StateStalled, pluginhost.StateFailed, pluginhost.StateStopped}

// seqSeen is when a scrape first saw the outbox's last seq at or above seq.
type seqSeen struct {
	seq uint64
	at  time.Time
}

// agentCollector reads the agent's status at scrape time.
type agentCollector struct {
	a *Agent

	mu   sync.Mutex
	seen []seqSeen // ascending seq; entries below the oldest pending seq are dropped
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUplinkConnected, descCommittedSeq, descPendingEvents, descPendingBytes, descQuotaBytes,
		descLastSeq, descBlocked, descOldest, descConnState, descCaptured, descRestarts, descConflicts} {
		ch <- d
	}
}

// oldestAge is how long ago a scrape (or the agent's start) first saw the oldest
// pending seq (first) in the outbox; 0 when nothing is pending.
func (c *agentCollector) oldestAge(first, last uint64, now time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.seen); n == 0 || c.seen[n-1].seq < last {
		c.seen = append(c.seen, seqSeen{seq: last, at: now})
	}
	i := 0
	for i < len(c.seen)-1 && c.seen[i].seq < first {
		i++
	}
	c.seen = c.seen[i:]
	if len(c.seen) > 4096 { // bounded: a long outage with frequent scrapes; ages stay lower bounds
		c.seen = append(c.seen[:1], c.seen[len(c.seen)-4095:]...)
	}
	if first == 0 {
		return 0
	}
	return max(now.Sub(c.seen[0].at).Seconds(), 0)
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	us := a.uplink.Status()
	for _, tr := range []string{"h2", "h3"} {
		ch <- metrics.Gauge(descUplinkConnected, b2f(us.State == uplink.StateConnected && us.Transport == tr), tr)
	}
	ch <- metrics.Gauge(descCommittedSeq, float64(us.CommittedSeq))
	os := a.outbox.Stats()
	ch <- metrics.Gauge(descPendingEvents, float64(os.PendingEvents))
	ch <- metrics.Gauge(descPendingBytes, float64(os.PendingBytes))
	ch <- metrics.Gauge(descQuotaBytes, float64(os.QuotaBytes))
	ch <- metrics.Gauge(descLastSeq, float64(os.LastSeq))
	ch <- metrics.Gauge(descBlocked, b2f(os.Blocked))
	ch <- metrics.Gauge(descOldest, c.oldestAge(os.FirstSeq, os.LastSeq, time.Now()))
	if a.host != nil {
		for _, cs := range a.host.Status() {
			for _, s := range connectorStates {
				ch <- metrics.Gauge(descConnState, b2f(cs.GetState() == s), cs.GetName(), s)
			}
			ch <- metrics.Counter(descCaptured, float64(cs.GetEventsCaptured()), cs.GetName())
			ch <- metrics.Counter(descRestarts, float64(cs.GetRestarts()), cs.GetName())
		}
	}
	a.conflicts.mu.Lock()
	conflicts := a.conflicts.total
	a.conflicts.mu.Unlock()
	ch <- metrics.Counter(descConflicts, float64(conflicts))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Ready reports why the agent cannot take events, or nil. An agent is ready while its
// outbox is open and healthy and either the uplink is connected or the outbox still
// has room (it buffers within its quota while disconnected); not ready when the
// control plane refused it (revoked, replaced) or publishers would wait for room.
func (a *Agent) Ready() error {
	os := a.outbox.Stats()
	if _, _, err := a.outbox.Position(""); err != nil {
		return fmt.Errorf("outbox is not open: %w", err)
	}
	us := a.uplink.Status()
	if us.Refused != "" {
		return fmt.Errorf("the control plane refuses this agent: %s", us.Refused)
	}
	if os.Blocked && us.State != uplink.StateConnected {
		return fmt.Errorf("uplink %s and outbox blocked: %s", us.State, os.BlockedReason)
	}
	if os.Blocked {
		return errors.New("outbox blocked: " + os.BlockedReason)
	}
	return nil
}

// agentObs is the agent's metrics registry and listener.
type agentObs struct {
	reg *prometheus.Registry
	ln  *metrics.Listener
}

// Registry is the agent's Prometheus registry (served on Config.MetricsListen).
func (a *Agent) Registry() *prometheus.Registry { return a.obs.reg }

// MetricsAddr is the metrics listener's address, or "" when it is disabled.
func (a *Agent) MetricsAddr() string {
	if a.obs.ln == nil {
		return ""
	}
	return a.obs.ln.Addr()
}

// startMetrics registers the collector and, with Config.MetricsListen, serves
// /metrics, /healthz and /readyz over plain HTTP.
func (a *Agent) startMetrics() error {
	a.obs.reg = metrics.NewRegistry()
	// Events already pending at start are as old as the start, at least.
	a.obs.reg.MustRegister(&agentCollector{a: a, seen: []seqSeen{{seq: a.outbox.Stats().LastSeq, at: time.Now()}}})
	if a.cfg.MetricsListen == "" {
		return nil
	}
	l, err := metrics.Listen(a.cfg.MetricsListen, metrics.Handler(a.obs.reg, a.Ready), a.logger)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.obs.ln = l
	a.logger.Info("metrics and health served", "addr", l.Addr(), "paths", "/metrics /healthz /readyz")
	return nil
}

func (a *Agent) stopMetrics() {
	if a.obs.ln != nil {
		_ = a.obs.ln.Close()
	}
}
