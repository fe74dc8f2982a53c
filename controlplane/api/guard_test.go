package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/quic-go/quic-go/http3"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// client returns an HTTP client that trusts the node's CA, speaks only proto
// ("http/1.1" or "h2") and dials from localIP (any 127.x address on Linux loopback), so
// a test can be two different source addresses.
func client(t *testing.T, srv *controlplanetest.Server, proto, localIP string) *http.Client {
	t.Helper()
	if proto == "h3" {
		conf := pki.ClientTLSConfig(nil, srv.CA().Pool(), "")
		conf.NextProtos = []string{"h3"}
		tr := &http3.Transport{TLSClientConfig: conf}
		t.Cleanup(func() { tr.Close() })
		return &http.Client{Transport: tr}
	}
	tr := &http.Transport{
		TLSClientConfig: pki.ClientTLSConfig(nil, srv.CA().Pool(), ""),
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}).DialContext,
		Protocols:       new(http.Protocols),
	}
	switch proto {
	case "h2":
		tr.Protocols.SetHTTP2(true)
	default:
		tr.Protocols.SetHTTP1(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// bigBody yields size bytes and counts how many the HTTP client took from it.
type bigBody struct {
	size int64
	read atomic.Int64
}

func (b *bigBody) Read(p []byte) (int, error) {
	left := b.size - b.read.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), left)
	clear(p[:n])
	b.read.Add(n)
	return int(n), nil
}

// TestGuardRefusesLargeBodyUnread: a caller without credentials posting 16 MiB is
// refused from the headers; the refusal arrives while the client has written only a
// small part of the body (before the guard, the server read all 16 MiB, up to 32 MiB,
// before the token check, and held it in memory).
func TestGuardRefusesLargeBodyUnread(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	const size = 16 << 20
	cases := []struct {
		name, procedure, auth string
		chunked               bool
		want                  connect.Code
	}{
		{"admin without token", adminv1connect.AdminServiceListAgentsProcedure, "", false, connect.CodeUnauthenticated},
		{"admin with a wrong token", adminv1connect.AdminServiceRestoreSnapshotProcedure, "Bearer cdadm_nope.nope", false, connect.CodeUnauthenticated},
		{"uplink stream without certificate", uplinkv1connect.UplinkServiceStreamProcedure, "", true, connect.CodeUnauthenticated},
		{"enroll over the open body cap", uplinkv1connect.UplinkServiceEnrollProcedure, "", false, connect.CodeResourceExhausted},
		{"enroll chunked over the open body cap", uplinkv1connect.UplinkServiceEnrollProcedure, "", true, connect.CodeResourceExhausted},
	}
	for _, proto := range []string{"http/1.1", "h2", "h3"} {
		hc := client(t, srv, proto, "127.0.0.1")
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				var (
					res  *http.Response
					read int64
					err  error
				)
				body := &bigBody{size: size}
				if proto != "http/1.1" {
					res, err = postH2(hc, srv.Addr(), tc.procedure, tc.auth, tc.chunked, body)
				} else {
					res, err = postH1(t, srv, tc.procedure, tc.auth, tc.chunked, body)
				}
				read = body.read.Load()
				if err != nil {
					t.Fatalf("no answer (client wrote %d of %d bytes): %v", read, size, err)
				}
				defer res.Body.Close()
				msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
				if got := connectCode(res, msg); got != tc.want {
					t.Errorf("answer %s %q: code %v, want %v", res.Status, msg, got, tc.want)
				}
				// The answer came while the client still had most of the body to write; what
				// it wrote sits in socket buffers and HTTP/2 flow-control windows.
				if read >= size/2 {
					t.Errorf("the client wrote %d of %d body bytes before the refusal: the server read the body", read, size)
				}
			})
		}
	}
}

// postH2 posts body with Go's HTTP/2 client (or quic-go's HTTP/3 one), which returns
// the answer as soon as it arrives and then stops sending the body.
func postH2(hc *http.Client, addr, procedure, auth string, chunked bool, body *bigBody) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, "https://"+addr+procedure, body)
	if err != nil {
		return nil, err
	}
	if !chunked {
		req.ContentLength = body.size
	}
	req.Header.Set("Content-Type", contentType(procedure))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return hc.Do(req)
}

// postH1 writes an HTTP/1.1 request by hand: the headers, then the body from another
// goroutine, and reads the answer while the body is still being written. (Go's HTTP/1.1
// client gives up on a connection when a body write fails, answer or not.)
func postH1(t *testing.T, srv *controlplanetest.Server, procedure, auth string, chunked bool, body *bigBody) (*http.Response, error) {
	conf := pki.ClientTLSConfig(nil, srv.CA().Pool(), "")
	conf.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", srv.Addr(), conf)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	hdr := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n", procedure, srv.Addr(), contentType(procedure))
	if auth != "" {
		hdr += "Authorization: " + auth + "\r\n"
	}
	if chunked {
		hdr += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", body.size)
	}
	if _, err := io.WriteString(conn, hdr); err != nil {
		return nil, err
	}
	go func() {
		var w io.Writer = conn
		if chunked {
			cw := httputil.NewChunkedWriter(conn)
			defer func() {
				if cw.Close() == nil {
					_, _ = io.WriteString(conn, "\r\n") // the end of the (empty) trailer
				}
			}()
			w = cw
		}
		_, _ = io.Copy(w, body) // ends with an error once the server closes
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	return http.ReadResponse(bufio.NewReader(conn), nil)
}

// contentType is the Connect content type of a procedure: streaming ones frame their
// messages.
func contentType(procedure string) string {
	switch procedure {
	case adminv1connect.AdminServiceRestoreSnapshotProcedure, uplinkv1connect.UplinkServiceStreamProcedure:
		return "application/connect+proto"
	}
	return "application/proto"
}

// connectCode reads the Connect error code of a unary answer.
func connectCode(res *http.Response, body []byte) connect.Code {
	for _, c := range []connect.Code{connect.CodeUnauthenticated, connect.CodeResourceExhausted, connect.CodePermissionDenied, connect.CodeInvalidArgument, connect.CodeUnavailable, connect.CodeDeadlineExceeded} {
		if bytes.Contains(body, []byte(`"code":"`+c.String()+`"`)) {
			return c
		}
	}
	return connect.Code(0)
}

// TestGuardDropsHalfOpenRequests: a caller that stops in the middle of its headers, or
// after the headers of an unauthenticated call in the middle of its body, is cut off
// within the configured timeouts.
func TestGuardDropsHalfOpenRequests(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		c.Limits.ReadHeaderTimeout = timeout
		c.Limits.OpenReadTimeout = timeout
	})
	dial := func(t *testing.T) *tls.Conn {
		conf := pki.ClientTLSConfig(nil, srv.CA().Pool(), "")
		conf.NextProtos = []string{"http/1.1"}
		conn, err := tls.Dial("tcp", srv.Addr(), conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedWithin reads until the server closes the connection; a read deadline far
	// beyond the timeout bounds the wait.
	closedWithin := func(t *testing.T, conn net.Conn, limit time.Duration) {
		t.Helper()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(limit))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server still held the half-open request after %s", limit)
		}
		t.Logf("closed after %s (%v)", time.Since(start).Round(time.Millisecond), err)
	}

	t.Run("headers never finished", func(t *testing.T) {
		conn := dial(t)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\n", uplinkv1connect.UplinkServiceEnrollProcedure, srv.Addr())
		closedWithin(t, conn, 10*timeout)
	})
	t.Run("body never finished", func(t *testing.T) {
		conn := dial(t)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nContent-Length: 1000\r\n\r\n0123456789", uplinkv1connect.UplinkServiceEnrollProcedure, srv.Addr())
		closedWithin(t, conn, 10*timeout)
	})
	t.Run("refused, body never finished", func(t *testing.T) {
		// Refused from its headers (no token), the call's body is never read by a handler;
		// the server must still not wait for the rest of it.
		conn := dial(t)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nContent-Length: 1000\r\n\r\n0123456789", adminv1connect.AdminServiceListAgentsProcedure, srv.Addr())
		closedWithin(t, conn, 10*timeout)
	})
	for _, proto := range []string{"h2", "h3"} {
		t.Run(proto+" body never finished", func(t *testing.T) { stalledBody(t, srv, proto, timeout) })
	}
}

// stalledBody posts 10 bytes of an enrollment body and never finishes it: the node
// must answer within the open-call read timeout (it answers deadline_exceeded).
func stalledBody(t *testing.T, srv *controlplanetest.Server, proto string, timeout time.Duration) {
	hc := client(t, srv, proto, "127.0.0.1")
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go func() { _, _ = pw.Write([]byte("0123456789")) }()
	req, err := http.NewRequest(http.MethodPost, "https://"+srv.Addr()+uplinkv1connect.UplinkServiceEnrollProcedure, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	ctx, cancel := context.WithTimeout(context.Background(), 10*timeout)
	defer cancel()
	start := time.Now()
	res, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("no answer within %s to a stalled body: %v", 10*timeout, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if c := connectCode(res, msg); c != connect.CodeDeadlineExceeded {
		t.Errorf("answer %s %q: want deadline_exceeded", res.Status, msg)
	}
	t.Logf("answered %s after %s", res.Status, time.Since(start).Round(time.Millisecond))
}

// TestGuardLimitsEnrollmentPerAddress: enrollment attempts beyond the burst from one
// address are refused with resource_exhausted and a retry hint; another address is not
// affected.
func TestGuardLimitsEnrollmentPerAddress(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		c.Limits.EnrollBurst = 3
		c.Limits.EnrollPerSecond = 0.001
	})
	enroll := func(from string) error {
		c := uplinkv1connect.NewUplinkServiceClient(client(t, srv, "h2", from), "https://"+srv.Addr())
		_, err := c.Enroll(context.Background(), connect.NewRequest(&uplinkv1.EnrollRequest{Token: "not-a-token", CsrPem: "x"}))
		return err
	}
	for i := range 3 {
		if err := enroll("127.0.0.1"); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("attempt %d: want invalid_argument for the bad token, got %v", i+1, err)
		}
	}
	err := enroll("127.0.0.1")
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("4th attempt: want resource_exhausted, got %v", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Meta().Get("Retry-After") == "" || !strings.Contains(err.Error(), "retry in") {
		t.Errorf("refusal carries no retry hint: %v (meta %v)", err, ce.Meta())
	}
	if err := enroll("127.0.0.2"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("another address: want invalid_argument, got %v", err)
	}
}

// recorder keeps the messages logged at warn and above.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// TestGuardLimitsFailedAuthentication: once an address has spent its failed
// authentications, its calls are refused with resource_exhausted, even with a valid
// token, until the bucket refills; another address with the valid token is served. The
// refusals are logged RefusalLogBurst times, not once per call.
func TestGuardLimitsFailedAuthentication(t *testing.T) {
	rec := &recorder{}
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		c.Limits.AuthFailureBurst = 3
		c.Limits.AuthFailuresPerSecond = 0.001
		c.Limits.RefusalLogBurst = 2
		c.Logger = slog.New(rec)
	})
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	list := func(from, token string) error {
		c := adminv1connect.NewAdminServiceClient(client(t, srv, "h2", from), "https://"+srv.Addr())
		req := connect.NewRequest(&adminv1.ListAgentsRequest{})
		req.Header().Set("Authorization", "Bearer "+token)
		_, err := c.ListAgents(context.Background(), req)
		return err
	}
	if err := list("127.0.0.1", cc.Token); err != nil {
		t.Fatalf("valid token before any failure: %v", err)
	}
	wrong := cc.Token[:len(cc.Token)-4] + "AAAA"
	for i := range 3 {
		if err := list("127.0.0.1", wrong); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("failure %d: want unauthenticated, got %v", i+1, err)
		}
	}
	for range 10 {
		if err := list("127.0.0.1", cc.Token); connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("after 3 failures: want resource_exhausted even with the valid token, got %v", err)
		}
	}
	if err := list("127.0.0.2", cc.Token); err != nil {
		t.Errorf("another address with the valid token: %v", err)
	}
	// 13 refusals from 127.0.0.1 in two kinds (authentication, rate): at most 2 lines each.
	if n := rec.count("refused call"); n != 4 {
		t.Errorf("logged %d refusal lines for 13 refusals, want 4 (2 per source and reason)", n)
	}
}

// TestGuardLetsCredentialedCallsThrough: the guard does not stand in the way of a
// valid admin token on a large call (the limit for authenticated calls stays large).
func TestGuardLetsCredentialedCallsThrough(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if api.DefaultLimits.MaxBodyBytes < 16<<20 {
		t.Fatalf("authenticated body limit %d is below 16 MiB", api.DefaultLimits.MaxBodyBytes)
	}
	// An admin call with a valid token and a 1 MiB body of junk: the handler reads and
	// rejects it as a bad message, not the guard as unauthenticated.
	req, err := http.NewRequest(http.MethodPost, "https://"+srv.Addr()+adminv1connect.AdminServiceListAgentsProcedure, bytes.NewReader(bytes.Repeat([]byte{0xff}, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Authorization", "Bearer "+cc.Token)
	res, err := client(t, srv, "h2", "127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(res.Body)
	if c := connectCode(res, msg); c == connect.CodeUnauthenticated || c == connect.CodeResourceExhausted {
		t.Fatalf("valid token refused by the guard: %s %s", res.Status, msg)
	}
}
