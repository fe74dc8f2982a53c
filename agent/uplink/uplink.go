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
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/internal/wire"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
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
}

// DeadServerTimeout bounds how long a connected uplink takes to notice a server that
// stopped answering (a crashed process, a dead host, a cut path), with nothing to send:
// QUIC keepalives every second and a 5s idle timeout over HTTP/3, an HTTP/2 PING after
// 2s of silence that must be answered within 3s over TCP. The status then leaves
// "connected".
const DeadServerTimeout = 5 * time.Second

// errHTTP3Back ends an HTTP/2 session so that the next one uses HTTP/3.
var errHTTP3Back = errors.New("uplink: HTTP/3 works again; reconnecting over it")

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
	return &Uplink{cfg: cfg, logger: l.With("component", "uplink"), status: Status{State: StateDisconnected}}
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

// dial opens a stream to server: HTTP/3 first unless disabled, then HTTP/2. The stream
// counts as open once the server's Welcome arrived.
func (u *Uplink) dial(ctx context.Context, server string) (*connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse], *uplinkv1.Welcome, string, func(), error) {
	var errs []error
	transports := []string{TransportH3, TransportH2}
	if u.cfg.DisableQUIC {
		transports = transports[1:]
	}
	for _, tr := range transports {
		hc, closeFn := u.httpClient(tr)
		client := uplinkv1connect.NewUplinkServiceClient(hc, "https://"+server)
		sctx, cancel := context.WithCancel(ctx)
		stream := client.Stream(sctx)
		hello := &uplinkv1.Hello{AgentVersion: u.cfg.AgentVersion, OutboxInstance: u.cfg.Instance}
		st := u.cfg.Outbox.Stats()
		hello.OutboxFirstSeq, hello.OutboxLastSeq = st.FirstSeq, st.LastSeq
		welcome, err := func() (*uplinkv1.Welcome, error) {
			if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Hello{Hello: hello}}); err != nil {
				_, rerr := stream.Receive()
				return nil, errors.Join(err, rerr)
			}
			// The first answer must come quickly: a QUIC path that is blocked shows up as
			// a stream that never answers.
			timer := time.AfterFunc(u.cfg.QUICTimeout+2*time.Second, cancel)
			defer timer.Stop()
			msg, err := stream.Receive()
			if err != nil {
				return nil, err
			}
			w := msg.GetWelcome()
			if w == nil {
				return nil, errors.New("control plane did not answer hello with welcome")
			}
			return w, nil
		}()
		if err == nil {
			return stream, welcome, tr, func() { cancel(); closeFn() }, nil
		}
		cancel()
		closeFn()
		errs = append(errs, fmt.Errorf("%s: %w", tr, err))
		// A refusal or a redirect came from the server itself: the transport works.
		if c := connect.CodeOf(err); c == connect.CodeUnauthenticated || c == connect.CodePermissionDenied || c == connect.CodeFailedPrecondition || LeaderHint(err) != "" || ctx.Err() != nil {
			break
		}
		if tr == TransportH3 {
			u.logger.Info("HTTP/3 (QUIC) unavailable; falling back to HTTP/2 over TCP", "server", server, "err", err)
		}
	}
	return nil, nil, "", nil, errors.Join(errs...)
}

func (u *Uplink) httpClient(transport string) (*http.Client, func()) {
	tlsConf := u.cfg.TLS.Clone()
	if transport == TransportH3 {
		tlsConf.NextProtos = []string{http3.NextProtoH3}
		rt := &http3.Transport{
			TLSClientConfig: tlsConf,
			QUICConfig: &quic.Config{
				HandshakeIdleTimeout: u.cfg.QUICTimeout,
				// Keepalives every second let a dead server show up as an idle
				// timeout within DeadServerTimeout even when the agent has nothing to
				// send (a killed process sends nothing back over UDP).
				MaxIdleTimeout:  DeadServerTimeout,
				KeepAlivePeriod: time.Second,
			},
		}
		return &http.Client{Transport: rt}, func() { rt.Close() }
	}
	tlsConf.NextProtos = []string{"h2"}
	rt := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second,
		// A host that died without a TCP reset (power, network) is noticed by PING.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 2 * time.Second, PingTimeout: DeadServerTimeout - 2*time.Second}}
	return &http.Client{Transport: rt}, rt.CloseIdleConnections
}

// session runs one connection until it fails.
func (u *Uplink) session(ctx context.Context, server string) error {
	u.setStatus(func(s *Status) { s.State, s.Server = StateConnecting, server })
	stream, welcome, transport, closeFn, err := u.dial(ctx, server)
	if err != nil {
		return err
	}
	defer closeFn()
	// The control plane never acknowledges what this outbox has not written: a
	// committed seq beyond it would delete events that were never sent.
	if last := u.cfg.Outbox.Stats().LastSeq; welcome.GetCommittedSeq() > last {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
		return fmt.Errorf("%w: the control plane says seq %d of this agent is committed, but its outbox only reaches seq %d; nothing is deleted. "+
			"The agent's identity belongs to another outbox: re-enroll this one with `crossdock token create --name ... --replace`",
			ErrProtocol, welcome.GetCommittedSeq(), last)
	}
	u.logger.Info("uplink connected", "server", server, "transport", transport, "node", welcome.GetNodeId(), "committed_seq", welcome.GetCommittedSeq())
	u.setStatus(func(s *Status) {
		s.State, s.Transport, s.ConnectedSince, s.LastError, s.Refused = StateConnected, transport, time.Now(), "", ""
		s.CommittedSeq = welcome.GetCommittedSeq()
	})
	if err := u.cfg.Outbox.Ack(welcome.GetCommittedSeq()); err != nil {
		return fmt.Errorf("uplink: ack outbox: %w", err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	win := &window{slots: make(chan struct{}, u.cfg.Window), sent: welcome.GetCommittedSeq()}
	out := &sender{stream: stream}
	errc := make(chan error, 5)
	go func() { errc <- u.send(sctx, out, welcome.GetCommittedSeq()+1, win) }()
	go func() { errc <- u.receive(sctx, stream, out, win) }()
	go func() { errc <- win.watch(sctx, u.cfg.AckTimeout) }()
	go func() { errc <- u.renewLoop(sctx, out) }()
	running := 4
	if transport == TransportH2 && !u.cfg.DisableQUIC {
		running++
		go func() { errc <- u.probeHTTP3(sctx, server) }()
	}
	err = <-errc
	cancel()
	out.closed.Store(true) // sink results still being written are not sent
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
	for range running - 1 {
		<-errc
	}
	return err
}

// probeHTTP3 runs while a session uses HTTP/2 although QUIC is allowed (HTTP/3 failed
// at connect, e.g. while the server was restarting): every HTTP3Retry it makes a QUIC
// handshake with the server and returns errHTTP3Back when one succeeds, so the session
// ends and the next one uses HTTP/3. Entries in flight are re-sent and deduplicated.
func (u *Uplink) probeHTTP3(ctx context.Context, server string) error {
	t := time.NewTicker(u.cfg.HTTP3Retry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		tlsConf := u.cfg.TLS.Clone()
		tlsConf.NextProtos = []string{http3.NextProtoH3}
		hctx, cancel := context.WithTimeout(ctx, u.cfg.QUICTimeout)
		conn, err := quic.DialAddr(hctx, server, tlsConf, &quic.Config{HandshakeIdleTimeout: u.cfg.QUICTimeout})
		cancel()
		if err != nil {
			u.logger.Debug("HTTP/3 still unavailable; staying on HTTP/2", "server", server, "err", err)
			continue
		}
		_ = conn.CloseWithError(0, "probe")
		return errHTTP3Back
	}
}

// renewLoop asks for a new certificate on the stream when the Renewal says it is due:
// at connect and every RenewCheck. The answer arrives in receive.
func (u *Uplink) renewLoop(ctx context.Context, out *sender) error {
	if u.cfg.Renewal == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTicker(u.cfg.RenewCheck)
	defer t.Stop()
	for {
		if u.cfg.Renewal.Due() {
			csr, err := u.cfg.Renewal.CSR()
			if err != nil {
				u.logger.Error("certificate renewal: make a key and CSR", "err", err)
			} else if err := out.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Renew{Renew: &uplinkv1.RenewRequest{CsrPem: string(csr)}}}); err != nil {
				return fmt.Errorf("uplink: send renewal: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// window bounds the batches in flight: a slot is taken per batch sent and given back
// when an ack covers the batch's last seq.
type window struct {
	slots   chan struct{}
	mu      sync.Mutex
	sent    uint64 // the highest seq sent (or committed at connect)
	lasts   []uint64
	since   []time.Time // when each batch in lasts was sent
	lastAck time.Time
}

func (w *window) acquire(ctx context.Context, last uint64) error {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	w.sent = max(w.sent, last)
	w.lasts = append(w.lasts, last)
	w.since = append(w.since, time.Now())
	w.mu.Unlock()
	return nil
}

// watch fails when the oldest batch in flight has waited longer than timeout and no
// ack arrived meanwhile.
func (w *window) watch(ctx context.Context, timeout time.Duration) error {
	t := time.NewTicker(timeout / 10)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		w.mu.Lock()
		stuck := len(w.since) > 0 && time.Since(w.since[0]) > timeout && time.Since(w.lastAck) > timeout
		w.mu.Unlock()
		if stuck {
			return fmt.Errorf("uplink: no ack for %s with batches in flight; reconnecting", timeout)
		}
	}
}

// release frees the slots of the batches committed covers. An ack beyond what was sent
// is a protocol error: deleting those seqs would lose events.
func (w *window) release(committed uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if committed > w.sent {
		return fmt.Errorf("%w: the control plane acknowledged seq %d, but this stream sent only up to seq %d; nothing is deleted", ErrProtocol, committed, w.sent)
	}
	w.lastAck = time.Now()
	for len(w.lasts) > 0 && w.lasts[0] <= committed {
		w.lasts, w.since = w.lasts[1:], w.since[1:]
		<-w.slots
	}
	return nil
}

// sender serialises the sends of one stream: batches and reports from send, sink
// results from the sink writes.
type sender struct {
	mu     sync.Mutex
	closed atomic.Bool
	stream *connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse]
}

func (s *sender) Send(m *uplinkv1.StreamRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return errors.New("uplink: stream closed")
	}
	return s.stream.Send(m)
}

func (u *Uplink) send(ctx context.Context, stream *sender, cursor uint64, window *window) error {
	ob := u.cfg.Outbox
	var bw wire.BatchWriter
	// Connector reports share the stream with batches, so this goroutine sends both.
	var changed <-chan struct{}
	var refresh <-chan time.Time
	report := func() error {
		changed = u.cfg.ConnectorsChanged()
		rep := &uplinkv1.ConnectorReport{Connectors: u.cfg.Connectors()}
		if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Connectors{Connectors: rep}}); err != nil {
			return fmt.Errorf("uplink: send connector report: %w", err)
		}
		return nil
	}
	if u.cfg.Connectors != nil && u.cfg.ConnectorsChanged != nil {
		t := time.NewTicker(u.cfg.ReportInterval)
		defer t.Stop()
		refresh = t.C
		if err := report(); err != nil {
			return err
		}
	}
	for {
		select {
		case <-changed:
			if err := report(); err != nil {
				return err
			}
		case <-refresh:
			if err := report(); err != nil {
				return err
			}
		default:
		}
		notify := ob.Notify()
		bw.Reset()
		n, last, err := ob.ReadFunc(cursor, u.cfg.BatchMaxEvents, u.cfg.BatchMaxBytes, bw.Add)
		if err != nil {
			return fmt.Errorf("uplink: read outbox: %w", err)
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-notify:
				continue
			case <-changed:
				if err := report(); err != nil {
					return err
				}
				continue
			case <-refresh:
				if err := report(); err != nil {
					return err
				}
				continue
			}
		}
		if err := window.acquire(ctx, last); err != nil {
			return err
		}
		// Connect copies the request into its own buffer: bw's is free again after Send.
		req := &uplinkv1.StreamRequest{}
		req.ProtoReflect().SetUnknown(bw.Request())
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("uplink: send batch: %w", err)
		}
		cursor = last + 1
	}
}

func (u *Uplink) receive(ctx context.Context, stream *connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse], out *sender, window *window) error {
	var writes sync.WaitGroup
	defer writes.Wait()
	slots := make(chan struct{}, max(u.cfg.MaxSinkWrites, 1))
	for {
		msg, err := stream.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uplink: receive: %w", err)
		}
		if w := msg.GetSinkWrite(); w != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			writes.Add(1)
			go func() {
				defer func() { <-slots; writes.Done() }()
				// A result that cannot be sent (stream gone) is lost; the control plane
				// fails the write when the stream ends and sends it again, and the
				// connector's idempotency by event id makes that harmless.
				_ = out.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_SinkResult{SinkResult: u.sinkWrite(ctx, w)}})
			}()
			continue
		}
		if r := msg.GetRenewed(); r != nil {
			u.installRenewed(r)
			continue
		}
		ack := msg.GetAck()
		if ack == nil {
			continue
		}
		// Checked before the outbox deletes anything.
		if err := window.release(ack.GetCommittedSeq()); err != nil {
			return err
		}
		if len(ack.GetConflicts()) > 0 && u.cfg.Conflicts != nil {
			u.cfg.Conflicts(ack.GetConflicts())
		}
		if err := u.cfg.Outbox.Ack(ack.GetCommittedSeq()); err != nil {
			return fmt.Errorf("uplink: ack outbox: %w", err)
		}
		u.setStatus(func(s *Status) { s.CommittedSeq = ack.GetCommittedSeq() })
	}
}

// installRenewed installs a renewed certificate; a refusal is logged and retried at
// the next check.
func (u *Uplink) installRenewed(r *uplinkv1.Renewed) {
	if u.cfg.Renewal == nil {
		return
	}
	if r.GetError() != "" {
		u.logger.Error("certificate renewal refused by the control plane", "err", r.GetError())
		return
	}
	if err := u.cfg.Renewal.Install([]byte(r.GetCertificatePem())); err != nil {
		u.logger.Error("certificate renewal: install the new certificate", "err", err)
		return
	}
	u.logger.Info("certificate renewed")
}

// sinkWrite runs one SinkWrite through the configured Sink.
func (u *Uplink) sinkWrite(ctx context.Context, w *uplinkv1.SinkWrite) *uplinkv1.SinkResult {
	r := &uplinkv1.SinkResult{RequestId: w.GetRequestId()}
	if u.cfg.Sink == nil {
		r.Error, r.Permanent = "this agent has no sink connectors", true
		return r
	}
	if w.GetEvent() == nil {
		r.Error, r.Permanent = "sink write without an event", true
		return r
	}
	ref, err := u.cfg.Sink(ctx, w.GetConnector(), w.GetEvent())
	if err != nil {
		r.Error = err.Error()
		r.Permanent = u.cfg.IsPermanent != nil && u.cfg.IsPermanent(err)
		u.logger.Warn("sink write failed", "connector", w.GetConnector(), "message_id", w.GetMessageId(), "permanent", r.Permanent, "err", err)
		return r
	}
	r.Ref = ref
	return r
}

// LeaderHint returns the leader's API address carried by a "not the leader" error.
func LeaderHint(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Meta().Get(protocol.LeaderHeader)
	}
	return ""
}
