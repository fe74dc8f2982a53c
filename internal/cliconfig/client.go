package cliconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// AdminClient returns an admin API client for c: HTTPS (HTTP/2) verified against c's CA,
// with c's token on every request. close releases idle connections.
func (c *Config) AdminClient() (client adminv1connect.AdminServiceClient, close func(), err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CAPEM)) {
		return nil, nil, errors.New("the configured cluster CA is not a PEM certificate")
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
	hc := &http.Client{Transport: Bearer{Token: c.Token, Next: tr}}
	return adminv1connect.NewAdminServiceClient(hc, addr), tr.CloseIdleConnections, nil
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
