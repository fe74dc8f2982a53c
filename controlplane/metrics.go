package controlplane

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/platform/metrics"
)

// observability is a node's metrics registry, its metrics listener and the readiness
// tracker. Collectors read existing state at scrape time; only the per-request
// delivery histogram and retry counter are updated as things happen (delivery
// Config.OnAttempt).
type observability struct {
	reg      *prometheus.Registry
	listener *metrics.Listener
	requests *prometheus.HistogramVec
	retried  *prometheus.CounterVec
	// applyTook and applyLatency: raft commit and apply latency, measured in the FSM
	// (histograms: lock-free to observe, cheap to scrape; see metrics.RaftPrefixes).
	applyTook    prometheus.Histogram
	applyLatency prometheus.Histogram

	mu          sync.Mutex
	lastApplied uint64
	appliedAt   time.Time
}

func newObservability() *observability {
	o := &observability{
		reg: metrics.NewRegistry(),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "delivery", Name: "request_duration_seconds",
			Help:    "Duration of requests to destinations, by destination and outcome (ok, retry, throttled, permanent).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"destination", "outcome"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "delivery", Name: "retried_total",
			Help: "Requests to a destination that failed transiently (outcome retry or throttled) and are retried unless their attempts are used up, sent by this node.",
		}, []string{"destination"}),
		applyTook: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "raft", Name: "fsm_apply_seconds",
			Help:    "Time this node took to apply one raft command entry (a batch of events, a document, ...) to the ledger.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1 ms to 3.3 s
		}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "raft", Name: "commit_apply_latency_seconds",
			Help:    "From the leader proposing a raft command entry to this node having applied it (on the leader: commit and apply latency; on a follower it includes clock skew with the leader).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to 16 s
		}),
	}
	o.reg.MustRegister(o.requests, o.retried, o.applyTook, o.applyLatency)
	return o
}

func (o *observability) onApply(took, sinceProposed time.Duration) {
	o.applyTook.Observe(took.Seconds())
	o.applyLatency.Observe(max(sinceProposed, 0).Seconds())
}

func (o *observability) onAttempt(dest, outcome string, took time.Duration) {
	o.requests.WithLabelValues(dest, outcome).Observe(took.Seconds())
	if outcome == "retry" || outcome == "throttled" {
		o.retried.WithLabelValues(dest).Inc()
	}
}

// Registry is the node's Prometheus registry (served on --metrics-listen).
func (s *Server) Registry() *prometheus.Registry { return s.obs.reg }

// MetricsAddr is the metrics listener's address, or "" when it is disabled.
func (s *Server) MetricsAddr() string {
	if s.obs.listener == nil {
		return ""
	}
	return s.obs.listener.Addr()
}

// startMetrics registers the collectors and, with Config.MetricsListen, serves
// /metrics, /healthz and /readyz over plain HTTP.
func (s *Server) startMetrics() error {
	s.obs.reg.MustRegister(&nodeCollector{s: s}, &moreCollector{s: s}) // metrics_more.go: partner API, views, alerts
	sink, err := metrics.HashicorpSink()
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if err := s.obs.reg.Register(sink); err != nil {
		return fmt.Errorf("controlplane: register raft metrics: %w", err)
	}
	if s.cfg.MetricsListen == "" {
		return nil
	}
	l, err := metrics.Listen(s.cfg.MetricsListen, metrics.Handler(s.obs.reg, s.Ready), s.logger)
	if err != nil && s.cfg.MetricsListenOptional && errors.Is(err, syscall.EADDRINUSE) {
		// The default address is taken (another node on this host): the node runs
		// without the listener rather than not at all, and says how to get one.
		s.logger.Warn("metrics listener not started: the default address is in use; give this node its own with --metrics-listen", "addr", s.cfg.MetricsListen, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	s.obs.listener = l
	s.logger.Info("metrics and health served", "addr", l.Addr(), "paths", "/metrics /healthz /readyz")
	return nil
}

func (s *Server) stopMetrics() {
	if s.obs.listener != nil {
		_ = s.obs.listener.Close()
	}
}

var (
	descLedgerSeq       = metrics.Desc("ledger_seq", "Highest committed event seq in this node's ledger.")
	descLedgerCommitted = metrics.Desc("ledger_committed_events_total", "Events committed to the ledger (seqs are gap-free from 1, so this is the last seq).")
	descLedgerApplied   = metrics.Desc("ledger_applied_index", "Raft index of the last command applied to this node's ledger.")
	descRaftLeader      = metrics.Desc("raft_leader", "1 when this node is the raft leader, else 0.")
	descRaftHasLeader   = metrics.Desc("raft_has_leader", "1 when this node knows a raft leader, else 0.")
	descRaftTerm        = metrics.Desc("raft_term", "Current raft term.")
	descRaftCommit      = metrics.Desc("raft_commit_index", "Raft commit index as this node knows it.")
	descRaftApplied     = metrics.Desc("raft_applied_index", "Raft index applied to the state machine on this node.")
	descRaftLastContact = metrics.Desc("raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).")
	descRaftLogBytes    = metrics.Desc("raft_log_bytes", "Bytes of entry data in this node's raft log, as written (bounded by --raft-trailing-bytes + --raft-snapshot-bytes; docs/operations.md).")
	descRaftSnapshot    = metrics.Desc("raft_snapshot_running", "1 while this node takes a raft snapshot of its ledger, else 0.")
	descStreams         = metrics.Desc("uplink_streams", "Live agent uplink streams on this node (1 per agent), by agent and transport (h2, h3).", "agent", "transport")
	descDelivered       = metrics.Desc("delivery_delivered_total", "Events delivered to a destination (committed counter, the same on every node).", "destination")
	descDead            = metrics.Desc("delivery_dead_lettered_total", "Events dead-lettered for a destination (committed counter).", "destination")
	descCoalesced       = metrics.Desc("delivery_coalesced_total", "Events superseded by a newer event of the same key before delivery (committed counter).", "destination")
	descLagEvents       = metrics.Desc("delivery_lag_events", "Ledger events at or above the destination's cursor (not yet delivered or dead-lettered).", "destination")
	descLagSeconds      = metrics.Desc("delivery_lag_seconds", "Age of the oldest ledger event at the destination's cursor (0 when caught up).", "destination")
	descBreaker         = metrics.Desc("delivery_breaker_state", "Circuit breaker state of a destination: 1 for the current state (closed, open, half-open), 0 for the others.", "destination", "state")
	descQueued          = metrics.Desc("delivery_queued", "Messages queued for a destination on the leader.", "destination")
	descInFlight        = metrics.Desc("delivery_in_flight", "Requests in flight to a destination on the leader.", "destination")
	descActive          = metrics.Desc("delivery_active", "1 when this node runs the destination's worker (the leader), else 0.", "destination")
)

// nodeCollector reads the node's state at scrape time.
type nodeCollector struct{ s *Server }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLedgerSeq, descLedgerCommitted, descLedgerApplied, descRaftLeader, descRaftHasLeader,
		descRaftTerm, descRaftCommit, descRaftApplied, descRaftLastContact, descRaftLogBytes, descRaftSnapshot, descStreams, descDelivered, descDead, descCoalesced,
		descLagEvents, descLagSeconds, descBreaker, descQueued, descInFlight, descActive} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	l := s.store.Ledger()
	last := l.LastSeq()
	ch <- metrics.Gauge(descLedgerSeq, float64(last))
	ch <- metrics.Counter(descLedgerCommitted, float64(last))
	ch <- metrics.Gauge(descLedgerApplied, float64(l.AppliedIndex()))

	r := s.store.Raft()
	_, leaderID := r.LeaderWithID()
	leader := r.State() == raft.Leader
	ch <- metrics.Gauge(descRaftLeader, b2f(leader))
	ch <- metrics.Gauge(descRaftHasLeader, b2f(leaderID != ""))
	ch <- metrics.Gauge(descRaftTerm, float64(r.CurrentTerm()))
	ch <- metrics.Gauge(descRaftCommit, float64(r.CommitIndex()))
	ch <- metrics.Gauge(descRaftApplied, float64(r.AppliedIndex()))
	contact := 0.0
	if lc := r.LastContact(); !leader && !lc.IsZero() {
		contact = time.Since(lc).Seconds()
	}
	ch <- metrics.Gauge(descRaftLastContact, contact)
	ch <- metrics.Gauge(descRaftLogBytes, float64(s.store.LogBytes()))
	ch <- metrics.Gauge(descRaftSnapshot, b2f(s.store.Snapshotting()))

	for _, conn := range s.registry.Conns() {
		ch <- metrics.Gauge(descStreams, 1, conn.AgentID, conn.Transport)
	}

	if s.delivery == nil {
		return
	}
	sts, err := s.delivery.Status()
	if err != nil {
		s.logger.Warn("metrics: read delivery status", "err", err)
		return
	}
	now := time.Now()
	for _, st := range sts {
		d := st.Name
		cur := st.Cursor
		ch <- metrics.Counter(descDelivered, float64(cur.GetDelivered()), d)
		ch <- metrics.Counter(descDead, float64(cur.GetDeadLettered()), d)
		ch <- metrics.Counter(descCoalesced, float64(cur.GetCoalesced()), d)
		next := max(cur.GetSeq(), 1) // a new destination starts at seq 1
		lag, age := uint64(0), 0.0
		if next <= last {
			lag = last - next + 1
			if evs, _, err := l.ListEvents(ledger.Filter{}, next, 1); err == nil && len(evs) > 0 && evs[0].GetCommittedAt() != nil {
				age = max(now.Sub(evs[0].GetCommittedAt().AsTime()).Seconds(), 0)
			}
		}
		ch <- metrics.Gauge(descLagEvents, float64(lag), d)
		ch <- metrics.Gauge(descLagSeconds, age, d)
		for _, state := range []string{delivery.BreakerClosed, delivery.BreakerOpen, delivery.BreakerHalfOpen} {
			ch <- metrics.Gauge(descBreaker, b2f(st.Breaker == state), d, state)
		}
		ch <- metrics.Gauge(descQueued, float64(st.Queued), d)
		ch <- metrics.Gauge(descInFlight, float64(st.InFlight), d)
		ch <- metrics.Gauge(descActive, b2f(st.Active), d)
	}
}
