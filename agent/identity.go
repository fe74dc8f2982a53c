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
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/internal/pki"
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
	// renewedName holds a renewed pair until it replaced keyPairName: a crash between
	// the key and the certificate being replaced is repaired from it at the next load.
	renewedName = "renewed"
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
		// A renewal interrupted between the key and the certificate: finish it.
		rc, rk, rerr := pki.LoadKeyPair(dir, renewedName)
		if rerr != nil {
			return nil, fmt.Errorf("agent: parse identity: %w", err)
		}
		if cert, err = tls.X509KeyPair(rc, rk); err != nil {
			return nil, fmt.Errorf("agent: parse identity: %w", err)
		}
		if err := pki.WriteKeyPair(dir, keyPairName, rc, rk); err != nil {
			return nil, fmt.Errorf("agent: finish certificate renewal: %w", err)
		}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("agent: parse identity: %w", err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("agent: %s holds no CA certificate", filepath.Join(dir, caFile))
	}
	return &identity{ID: string(id), Cert: cert, CA: pool}, nil
}

// enroll trades a token for a certificate from the first server that answers. The
// connection is verified against the CA pin inside the token, never blindly trusted.
func enroll(ctx context.Context, dataDir string, servers []string, token, name string, labels map[string]string) (*identity, error) {
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
		res, err := client.Enroll(ctx, connect.NewRequest(&uplinkv1.EnrollRequest{Token: token, CsrPem: string(csrPEM), AgentName: name, Labels: labels}))
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

// renewer renews the agent's certificate over the uplink stream (uplink.Renewal) and
// serves the current one to new connections.
type renewer struct {
	dir string
	id  string

	mu      sync.Mutex
	cert    *tls.Certificate
	pending []byte // key of the last CSR
	now     func() time.Time
}

func newRenewer(dataDir string, id *identity) *renewer {
	c := id.Cert
	return &renewer{dir: filepath.Join(dataDir, identityDir), id: id.ID, cert: &c, now: time.Now}
}

// clientCert is tls.Config.GetClientCertificate.
func (r *renewer) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}

// NotAfter is the current certificate's expiry.
func (r *renewer) NotAfter() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert.Leaf.NotAfter
}

// issueSkew is how far the cluster CA backdates NotBefore (pki): not part of the
// lifetime the operator set.
const issueSkew = 5 * time.Minute

// Due: a third of the certificate's lifetime is left.
func (r *renewer) Due() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.cert.Leaf
	life := l.NotAfter.Sub(l.NotBefore)
	if life > issueSkew {
		life -= issueSkew
	}
	return r.now().After(l.NotAfter.Add(-life / 3))
}

func (r *renewer) CSR() ([]byte, error) {
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(r.id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.pending = keyPEM
	r.mu.Unlock()
	return csrPEM, nil
}

func (r *renewer) Install(certPEM []byte) error {
	r.mu.Lock()
	keyPEM := r.pending
	r.mu.Unlock()
	if keyPEM == nil {
		return errors.New("a certificate arrived without a renewal in progress")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if cert.Leaf.Subject.CommonName != r.id {
		return fmt.Errorf("renewed certificate is for %q, not this agent (%q)", cert.Leaf.Subject.CommonName, r.id)
	}
	if err := pki.WriteKeyPair(r.dir, renewedName, certPEM, keyPEM); err != nil {
		return err
	}
	if err := pki.WriteKeyPair(r.dir, keyPairName, certPEM, keyPEM); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(r.dir, renewedName+".crt"))
	_ = os.Remove(filepath.Join(r.dir, renewedName+".key"))
	r.mu.Lock()
	r.cert, r.pending = &cert, nil
	r.mu.Unlock()
	return nil
}
