// Package uplink streams the agent's outbox to the control plane: one Connect
// bidirectional stream over HTTP/3 (QUIC), or HTTP/2 over TCP when QUIC cannot connect.
//
// The agent sends batches of consecutive outbox entries with a window of batches in
// flight; the control plane answers each with the highest seq committed by a Raft
// quorum, and only then does the agent delete entries from its outbox. After any
// disconnect it reconnects with backoff and resumes from what the control plane says is
// committed, so entries in flight when the link dropped are re-sent and deduplicated.
package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/platform/ratelog"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Transports, as shown in status.
const (
	TransportH3 = "h3"
	TransportH2 = "h2"
)

// Uplink states.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
)

// Config configures an Uplink.
type Config struct {
	// Servers are control plane addresses (host:port); the uplink tries them in turn.
	Servers []string
	// TLS is the agent's mTLS client configuration (certificate and cluster CA).
	TLS *tls.Config
	// DisableQUIC skips HTTP/3 and always uses HTTP/2 over TCP.
	DisableQUIC bool
	Outbox      *outbox.Outbox
	// BatchMaxEvents and BatchMaxBytes bound one batch (defaults 500 and 1 MiB).
	BatchMaxEvents int
	BatchMaxBytes  int
	// Window is how many batches may be in flight unacknowledged (default 8).
	Window int
	// QUICTimeout bounds the QUIC handshake before falling back (default 3s).
	QUICTimeout time.Duration
	// AckTimeout ends a session when batches are in flight and no ack came for this
	// long (default 10s). A crashed server gives QUIC no signal, unlike a TCP reset.
	AckTimeout   time.Duration
	AgentVersion string
	Logger       *slog.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 200ms and 15s).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Connectors, when set, is reported to the control plane after Hello, whenever
	// ConnectorsChanged fires, and every ReportInterval (default 30s).
	Connectors        func() []*agentv1.ConnectorStatus
	ConnectorsChanged func() <-chan struct{}
	ReportInterval    time.Duration
	// Sink, when set, writes an event the control plane delivers to one of the agent's
	// sink connectors (a destination of kind "agent") and returns the target's
	// reference. Without it such writes are answered with a permanent error.
	Sink func(ctx context.Context, connector string, event *eventv1.Event) (ref string, err error)
	// IsPermanent classifies a Sink error as one no retry can fix.
	IsPermanent func(error) bool
	// MaxSinkWrites bounds the sink writes running at once (default 16).
	MaxSinkWrites int
	// Instance is the outbox's instance id, sent in Hello: the control plane binds the
	// agent's incarnation to it.
	Instance string
	// Conflicts, when set, is told of events the control plane did not commit because
	// their id was committed before with other content.
	Conflicts func([]*uplinkv1.Conflict)
	// Renewal, when set, renews the agent's certificate over the stream when due.
	Renewal Renewal
	// RenewCheck is how often a connected uplink asks Renewal whether it is due
	// (default 1h; also at every connect).
	RenewCheck time.Duration
	// HTTP3Retry is how often an uplink connected over HTTP/2 (QUIC not disabled) checks
	// whether HTTP/3 works again, and reconnects over it when it does (default 2m).
	HTTP3Retry time.Duration
	// OnConfig, when set, is handed every central configuration the control plane
	// sends (AgentConfigPush). It must not block: the receive loop calls it.
	OnConfig func(*uplinkv1.AgentConfigPush)
	// Fleet, when set, gives the configuration report and the health sent with every
	// connector report (after Hello, at every ConnectorsChanged and ReportInterval).
	Fleet func() (*uplinkv1.ConfigReport, *uplinkv1.AgentHealth)
	// OnUpgrade, when set, is handed every UpgradeCommand. It must not block.
	OnUpgrade func(*uplinkv1.UpgradeCommand)
	// Upgrade, when set, gives the upgrade report sent with every connector report
	// (nil: nothing to report).
	Upgrade func() *uplinkv1.UpgradeReport
}

// SetTuning changes the batch size and the window (0 keeps the configured value): the
// batch size applies to the next batch, the window from the next connection.
func (u *Uplink) SetTuning(batch, window int) {
	u.batchOverride.Store(int64(batch))
	u.windowOverride.Store(int64(window))
}

func (u *Uplink) batchMaxEvents() int {
	if n := u.batchOverride.Load(); n > 0 {
		return int(n)
	}
	return u.cfg.BatchMaxEvents
}

func (u *Uplink) window() int {
	if n := u.windowOverride.Load(); n > 0 {
		return int(n)
	}
	return u.cfg.Window
}

// Renewal renews the agent's certificate.
type Renewal interface {
	// Due reports whether the certificate should be renewed now.
	Due() bool
	// CSR makes a new key and returns a certificate signing request for it.
	CSR() ([]byte, error)
	// Install stores and starts using the certificate issued for the last CSR.
	Install(certPEM []byte) error
}

// Status is the uplink's state, for agent status.
type Status struct {
	State          string
	Transport      string
	Server         string
	LastError      string
	ConnectedSince time.Time
	CommittedSeq   uint64
	// Refused is why the control plane refuses this agent (revoked, replaced, another
	// outbox); the uplink keeps retrying at its longest backoff.
	Refused string
}

// ErrProtocol is a control plane answer that breaks the uplink's contract (an ack of a
// seq never sent): the session ends loudly instead of dropping events.
var ErrProtocol = errors.New("uplink: protocol error")

// Uplink keeps the agent connected and the outbox draining.
type Uplink struct {
	cfg    Config
	logger *slog.Logger
	logs   *ratelog.Limiter // sink failures per connector

	// Central tuning (SetTuning): 0 keeps cfg's value.
	batchOverride, windowOverride atomic.Int64

	mu     sync.Mutex
	status Status
}

// New returns an Uplink; Run starts it.
func New(cfg Config) *Uplink {
	if cfg.BatchMaxEvents <= 0 {
		cfg.BatchMaxEvents = 500
	}
	if cfg.BatchMaxBytes <= 0 {
		cfg.BatchMaxBytes = 1 << 20
	}
	if cfg.Window <= 0 {
		cfg.Window = 8
	}
	if cfg.QUICTimeout <= 0 {
		cfg.QUICTimeout = 3 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 30 * time.Second
	}
	if cfg.RenewCheck <= 0 {
		cfg.RenewCheck = time.Hour
	}
	if cfg.HTTP3Retry <= 0 {
		cfg.HTTP3Retry = 2 * time.Minute
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Uplink{cfg: cfg, logger: l.With("component", "uplink"), logs: ratelog.New(0, 0), status: Status{State: StateDisconnected}}
}

// Status returns a copy of the current status.
func (u *Uplink) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status
}

func (u *Uplink) setStatus(f func(*Status)) {
	u.mu.Lock()
	f(&u.status)
	u.mu.Unlock()
}

// Run connects and streams until ctx is done. It returns only ctx's error, or an error
// the agent cannot recover from by reconnecting (its certificate was refused).
func (u *Uplink) Run(ctx context.Context) error {
	backoff := u.cfg.MinBackoff
	hint := ""
	for attempt := 0; ; attempt++ {
		server := u.cfg.Servers[attempt%len(u.cfg.Servers)]
		if hint != "" {
			server, hint = hint, ""
			attempt-- // the hint does not use up a turn of the list
		}
		started := time.Now()
		err := u.session(ctx, server)
		if ctx.Err() != nil {
			u.setStatus(func(s *Status) { s.State, s.Transport = StateDisconnected, "" })
			return ctx.Err()
		}
		refused := ""
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeFailedPrecondition:
			refused = err.Error()
		}
		if errors.Is(err, ErrProtocol) {
			refused = err.Error()
		}
		u.setStatus(func(s *Status) {
			s.State, s.Transport, s.LastError, s.Refused = StateDisconnected, "", err.Error(), refused
		})
		if errors.Is(err, errHTTP3Back) {
			u.logger.Info("HTTP/3 (QUIC) reachable again; reconnecting over it", "server", server)
			hint = server
			continue
		}
		if h := LeaderHint(err); h != "" && h != server {
			u.logger.Info("control plane node is not the leader; following it to the leader", "server", server, "leader", h)
			hint = h
			continue
		}
		if refused != "" {
			// Nothing is acknowledged or deleted: the outbox keeps every event until an
			// operator fixes the identity. Retrying at the longest backoff notices a fix.
			u.logger.Error("control plane refused this agent; events stay in the outbox", "server", server, "err", err, "retry_in", u.cfg.MaxBackoff)
			backoff = u.cfg.MaxBackoff
		} else {
			u.logger.Warn("uplink disconnected; will reconnect", "server", server, "err", err, "retry_in", backoff)
		}
		if time.Since(started) > 30*time.Second && refused == "" {
			backoff = u.cfg.MinBackoff
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-ctx.Done():
			u.setStatus(func(s *Status) { s.State = StateDisconnected })
			return ctx.Err()
		case <-time.After(backoff/2 + jitter):
		}
		backoff = min(backoff*2, u.cfg.MaxBackoff)
	}
}
