package cliconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// DialTimeout bounds the TCP connect to one node before the next is tried.
const DialTimeout = 3 * time.Second

// AdminClient returns an admin API client for c: HTTPS (HTTP/2) verified against c's CA,
// with c's token on every request. close releases idle connections.
func (c *Config) AdminClient() (client adminv1connect.AdminServiceClient, close func(), err error) {
	hc, addr, close, err := c.HTTPClient()
	if err != nil {
		return nil, nil, err
	}
	return adminv1connect.NewAdminServiceClient(hc, addr), close, nil
}

// HTTPClient returns what a Connect client of any admin-token service needs: an HTTP
// client (HTTPS verified against c's CA, c's token on every request, unary calls
// retried on the leader, and on the next of c's nodes when one cannot be reached) and
// the base URL. close releases idle connections.
func (c *Config) HTTPClient() (client *http.Client, baseURL string, close func(), err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		return nil, "", nil, errors.New("the configured cluster CA is not a PEM certificate")
	}
	dialer := &net.Dialer{Timeout: DialTimeout, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     30 * time.Second,
	}
	servers := c.Servers()
	if len(servers) == 0 {
		return nil, "", nil, errors.New("the CLI config names no control plane address")
	}
	addr := servers[0]
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	hc := &http.Client{Transport: Bearer{Token: c.Token, Next: FollowLeader{Next: &Failover{Servers: servers, ConfigPath: c.Path, Next: tr}}}}
	return hc, addr, tr.CloseIdleConnections, nil
}

// Bearer is a RoundTripper that adds an Authorization: Bearer header.
type Bearer struct {
	Token string
	Next  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (b Bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.Token)
	return b.Next.RoundTrip(r)
}

// FollowLeader retries a unary call on the leader when a follower answers 503 with the
// leader's address (streams are not retried: their bodies cannot be replayed).
type FollowLeader struct {
	Next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (f FollowLeader) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := f.Next.RoundTrip(r)
	if err != nil || res.StatusCode != http.StatusServiceUnavailable {
		return res, err
	}
	leader := res.Header.Get(protocol.LeaderHeader)
	if leader == "" || leader == r.URL.Host || (r.Body != nil && r.GetBody == nil) {
		return res, nil
	}
	r2 := r.Clone(r.Context())
	r2.URL.Host, r2.Host = leader, ""
	if r.GetBody != nil {
		body, err := r.GetBody()
		if err != nil {
			return res, nil
		}
		r2.Body = body
	}
	res.Body.Close()
	return f.Next.RoundTrip(r2)
}

// Failover sends a request to the node it names and, when that node cannot be reached
// (no TCP connection: refused, timed out, no route), to each other node of Servers in
// turn. Only a failure to connect moves on: the request never reached the node, so
// sending it elsewhere cannot apply it twice. The node that last answered a request to
// the first server is tried first by the later ones (a redirect to the leader does not
// count: calls such as GetClusterStatus are answered by the node they reach). A certificate not signed by the config's CA is
// reported as a config pointing at another cluster.
type Failover struct {
	Servers []string
	// ConfigPath is named in errors ("" when the config came from flags).
	ConfigPath string
	Next       http.RoundTripper

	good atomic.Pointer[string]
}

// RoundTrip implements http.RoundTripper.
func (f *Failover) RoundTrip(r *http.Request) (*http.Response, error) {
	// A request to the first server is a request to the cluster: it starts with the
	// node that last answered one. Any other (a redirect to the leader) goes where it
	// says first, and does not change that node.
	toCluster := len(f.Servers) > 0 && r.URL.Host == f.Servers[0]
	first := r.URL.Host
	if g := f.good.Load(); g != nil && toCluster {
		first = *g
	}
	order := []string{first}
	for _, s := range f.Servers {
		if s != first && s != r.URL.Host {
			order = append(order, s)
		}
	}
	if r.URL.Host != first {
		order = append(order, r.URL.Host)
	}
	// A stream's body cannot be made again (no GetBody): it is lent to each attempt, and
	// an attempt that read from it is the last.
	var lent *lentBody
	if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
		lent = &lentBody{rc: r.Body}
		defer lent.settle()
	}
	var errs []string
	var lastErr error
	for i, host := range order {
		req := r
		if host != r.URL.Host || lent != nil {
			req = r.Clone(r.Context())
			req.URL.Host, req.Host = host, ""
		}
		if lent != nil && lent.wasRead() {
			break // sent in part by the last attempt: it cannot be sent again
		}
		switch {
		case lent != nil:
			lent.lend()
			req.Body = lent
		case i > 0 && r.GetBody != nil:
			// The body of the first attempt may be consumed: send a fresh copy.
			body, err := r.GetBody()
			if err != nil {
				return nil, fmt.Errorf("send the request again to %s: %w", host, err)
			}
			req.Body = body
		}
		res, err := f.Next.RoundTrip(req)
		if err == nil {
			if toCluster {
				f.good.Store(&host)
			}
			if lent != nil {
				lent.handOver()
			}
			return res, nil
		}
		lastErr = err
		switch {
		case notOurCA(err):
			errs = append(errs, fmt.Sprintf("%s: its certificate is not signed by the cluster CA in %s", host, f.where()))
		case unreachable(err) && r.Context().Err() == nil:
			errs = append(errs, fmt.Sprintf("%s: %v", host, err))
		default:
			return nil, err
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no control plane address to try")
	}
	return nil, &ConnectError{Tried: errs, ConfigPath: f.ConfigPath, Err: lastErr}
}

func (f *Failover) where() string {
	if f.ConfigPath == "" {
		return "--ca-cert"
	}
	return f.ConfigPath
}

// ConnectError is returned when no node of the config could be reached.
type ConnectError struct {
	Tried      []string
	ConfigPath string
	Err        error
}

func (e *ConnectError) Error() string {
	var b strings.Builder
	b.WriteString("no control plane node answered (")
	b.WriteString(strings.Join(e.Tried, "; "))
	b.WriteString(")")
	if e.ConfigPath != "" {
		fmt.Fprintf(&b, "; the addresses and CA came from the CLI config %s", e.ConfigPath)
	}
	if notOurCA(e.Err) {
		b.WriteString(": it belongs to another cluster (or the cluster was bootstrapped again). Use the admin.yaml in the server's data dir: CROSSDOCK_CONFIG=<data-dir>/admin.yaml, or copy it over the config")
	} else {
		b.WriteString(": start a node, or pass --addr with a running node's address (`crossdock cluster peers` stores every node's address in the config)")
	}
	return b.String()
}

func (e *ConnectError) Unwrap() error { return e.Err }

// unreachable reports whether err is a failure to connect to a node.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// notOurCA reports whether err is a server certificate the config's CA did not sign.
func notOurCA(err error) bool {
	var ua x509.UnknownAuthorityError
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &ve)
}

// lentBody lends a request body that cannot be made again to one attempt after another:
// the transport closes a body when an attempt fails, so Close does nothing until the
// body is handed over to the attempt that got a response; settle closes it when no
// attempt did. A transport reads nothing before it has a connection, so an attempt
// that failed to connect leaves it unread.
type lentBody struct {
	rc       io.ReadCloser
	mu       sync.Mutex
	read     bool
	owned    bool // handed over: Close closes rc
	closed   bool // the current attempt called Close before the hand-over
	released bool // rc closed
}

func (b *lentBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.read = true
	b.mu.Unlock()
	return b.rc.Read(p)
}

func (b *lentBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.owned {
		b.closed = true
		return nil
	}
	return b.release()
}

// lend starts an attempt: a Close before it came from a failed attempt.
func (b *lentBody) lend() {
	b.mu.Lock()
	b.closed = false
	b.mu.Unlock()
}

func (b *lentBody) wasRead() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

// handOver gives the body to the attempt that got a response.
func (b *lentBody) handOver() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.owned = true
	if b.closed {
		_ = b.release()
	}
}

// settle closes the body when no attempt took it.
func (b *lentBody) settle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.owned {
		_ = b.release()
	}
}

func (b *lentBody) release() error {
	if b.released {
		return nil
	}
	b.released = true
	return b.rc.Close()
}
