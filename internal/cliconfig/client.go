package cliconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

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
// retried on the leader) and the base URL. close releases idle connections.
func (c *Config) HTTPClient() (client *http.Client, baseURL string, close func(), err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		return nil, "", nil, errors.New("the configured cluster CA is not a PEM certificate")
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		ForceAttemptHTTP2: true,
		IdleConnTimeout:   30 * time.Second,
	}
	addr := c.Addr
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	hc := &http.Client{Transport: Bearer{Token: c.Token, Next: FollowLeader{Next: tr}}}
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
