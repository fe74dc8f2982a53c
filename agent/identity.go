package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/controlplane/pki"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// identity is the agent's mTLS identity, kept in <data>/identity.
type identity struct {
	ID   string
	Cert tls.Certificate
	CA   *x509.CertPool
}

const (
	identityDir = "identity"
	keyPairName = "agent"
	caFile      = "ca.crt"
	idFile      = "agent-id"
)

// ErrNotEnrolled means the agent has no identity and no token to get one.
var ErrNotEnrolled = errors.New("agent is not enrolled: start it once with --enroll-token TOKEN (from `crossdock token create`)")

func loadIdentity(dataDir string) (*identity, error) {
	dir := filepath.Join(dataDir, identityDir)
	certPEM, keyPEM, err := pki.LoadKeyPair(dir, keyPairName)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNotEnrolled
		}
		return nil, fmt.Errorf("agent: load identity: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("agent: load cluster CA: %w", err)
	}
	id, err := os.ReadFile(filepath.Join(dir, idFile))
	if err != nil {
		return nil, fmt.Errorf("agent: load agent id: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: parse identity: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("agent: %s holds no CA certificate", filepath.Join(dir, caFile))
	}
	return &identity{ID: string(id), Cert: cert, CA: pool}, nil
}

// enroll trades a token for a certificate from the first server that answers. The
// connection is verified against the CA pin inside the token, never blindly trusted.
func enroll(ctx context.Context, dataDir string, servers []string, token, name string) (*identity, error) {
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, fmt.Errorf("agent: enrollment token: %w", err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(name)
	if err != nil {
		return nil, fmt.Errorf("agent: create key: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: pki.PinnedTLSConfig(tok.CAPin), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var errs []error
	queue := append([]string(nil), servers...)
	for i := 0; i < len(queue) && i < len(servers)+3; i++ {
		srv := queue[i]
		client := uplinkv1connect.NewUplinkServiceClient(hc, "https://"+srv)
		res, err := client.Enroll(ctx, connect.NewRequest(&uplinkv1.EnrollRequest{Token: token, CsrPem: string(csrPEM), AgentName: name}))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			if h := uplink.LeaderHint(err); h != "" {
				queue = append(queue, h)
				continue
			}
			if c := connect.CodeOf(err); c == connect.CodePermissionDenied || c == connect.CodeInvalidArgument || errors.Is(err, pki.ErrPinMismatch) {
				break // the token itself is bad; another server will say the same
			}
			continue
		}
		dir := filepath.Join(dataDir, identityDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("agent: create identity dir: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, caFile), []byte(res.Msg.GetCaPem()), 0o644); err != nil {
			return nil, fmt.Errorf("agent: store CA: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, idFile), []byte(res.Msg.GetAgentId()), 0o644); err != nil {
			return nil, fmt.Errorf("agent: store agent id: %w", err)
		}
		// The key pair last: its presence marks the enrollment complete.
		if err := pki.WriteKeyPair(dir, keyPairName, []byte(res.Msg.GetCertificatePem()), keyPEM); err != nil {
			return nil, fmt.Errorf("agent: store certificate: %w", err)
		}
		return loadIdentity(dataDir)
	}
	return nil, fmt.Errorf("agent: enrollment failed: %w", errors.Join(errs...))
}
