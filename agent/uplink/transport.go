package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/crossdock/crossdock/internal/protocol"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// DeadServerTimeout bounds how long a connected uplink takes to notice a server that
// stopped answering (a crashed process, a dead host, a cut path), with nothing to send:
// QUIC keepalives every second and a 5s idle timeout over HTTP/3, an HTTP/2 PING after
// 2s of silence that must be answered within 3s over TCP. The status then leaves
// "connected".
const DeadServerTimeout = 5 * time.Second

// errHTTP3Back ends an HTTP/2 session so that the next one uses HTTP/3.
var errHTTP3Back = errors.New("uplink: HTTP/3 works again; reconnecting over it")

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

// LeaderHint returns the leader's API address carried by a "not the leader" error.
func LeaderHint(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Meta().Get(protocol.LeaderHeader)
	}
	return ""
}

// DownloadRelease writes the agent binary with hex SHA-256 sum, as the control plane the
// uplink is connected to serves it (UplinkService.DownloadRelease, mTLS), to w. The
// caller checks what it got.
func (u *Uplink) DownloadRelease(ctx context.Context, sum string, w io.Writer) error {
	server := u.Status().Server
	if server == "" {
		return errors.New("uplink: not connected to a control plane")
	}
	hc, closeFn := u.httpClient(TransportH2)
	defer closeFn()
	stream, err := uplinkv1connect.NewUplinkServiceClient(hc, "https://"+server).DownloadRelease(ctx, connect.NewRequest(&uplinkv1.DownloadReleaseRequest{Sha256: sum}))
	if err != nil {
		return fmt.Errorf("uplink: download release %s from %s: %w", sum, server, err)
	}
	defer stream.Close()
	for stream.Receive() {
		if _, err := w.Write(stream.Msg().GetData()); err != nil {
			return fmt.Errorf("uplink: download release %s: %w", sum, err)
		}
	}
	if err := stream.Err(); err != nil {
		return fmt.Errorf("uplink: download release %s from %s: %w", sum, server, err)
	}
	return nil
}
