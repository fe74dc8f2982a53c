package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPinnedAcceptsRightCA(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	res := handshake(t, ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool()), PinnedTLSConfig(ca.Pin()))
	if res.clientErr != nil || res.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
	}
	if res.server.NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN = %q, want h2", res.server.NegotiatedProtocol)
	}
	// An enrolling agent has no certificate yet.
	if _, _, err := PeerIdentity(&res.server); !errors.Is(err, ErrNoPeerCert) {
		t.Fatalf("PeerIdentity = %v, want ErrNoPeerCert", err)
	}
}

func TestPinnedChecksServerNameWhenKnown(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	conf := ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool())

	c := PinnedTLSConfig(ca.Pin())
	c.ServerName = "localhost" // in the certificate
	if res := handshake(t, conf, c); res.clientErr != nil {
		t.Fatalf("dial localhost: %v", res.clientErr)
	}
	c = PinnedTLSConfig(ca.Pin())
	c.ServerName = "evil.example.com"
	res := handshake(t, conf, c)
	wantErrIs(t, res.clientErr, ErrUntrustedServer)
	if errors.Is(res.clientErr, ErrPinMismatch) {
		t.Fatal("a name mismatch is not a pin mismatch")
	}
	if msg := res.clientErr.Error(); !strings.Contains(msg, `not valid for "evil.example.com"`) || !strings.Contains(msg, "--tls-san") {
		t.Fatalf("error %q does not explain the name mismatch", msg)
	}
}

func TestPinnedRefusesOtherCA(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	res := handshake(t, ServerTLSConfig(serverCert(t, other, "node-1"), other.Pool()), PinnedTLSConfig(ca.Pin()))
	wantErrIs(t, res.clientErr, ErrPinMismatch)
	msg := res.clientErr.Error()
	for _, want := range []string{
		"server CA does not match the CA pin in the enrollment token",
		"server " + other.Pin(),
		"token " + ca.Pin(),
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if res.serverErr == nil {
		t.Error("server handshake succeeded after the client refused it")
	}
}

func TestPinnedRefusesChainWithoutCA(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	cert := serverCert(t, ca, "node-1")
	cert.Certificate = cert.Certificate[:1] // leaf only
	res := handshake(t, ServerTLSConfig(cert, ca.Pool()), PinnedTLSConfig(ca.Pin()))
	wantErrIs(t, res.clientErr, ErrPinMismatch)
	if !strings.Contains(res.clientErr.Error(), "token "+ca.Pin()) {
		t.Fatalf("error %q does not name the token pin", res.clientErr)
	}
}

// A server that replays the real (public) CA certificate behind a leaf from another
// CA must not pass.
func TestPinnedRefusesForgedChain(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	attacker := newTestCA(t, "Attacker CA")
	forged := serverCert(t, attacker, "node-1")
	forged.Certificate[1] = ca.Cert().Raw
	res := handshake(t, ServerTLSConfig(forged, ca.Pool()), PinnedTLSConfig(ca.Pin()))
	wantErrIs(t, res.clientErr, ErrUntrustedServer)
}

// An agent certificate (client auth only) from the right CA must not pass as a
// server.
func TestPinnedRefusesAgentCertAsServer(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	agent := agentCert(t, ca, "agent-1")
	agent.Certificate = append(agent.Certificate, ca.Cert().Raw)
	res := handshake(t, ServerTLSConfig(agent, ca.Pool()), PinnedTLSConfig(ca.Pin()))
	wantErrIs(t, res.clientErr, ErrUntrustedServer)
}

func TestMTLSIdentity(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	conf := ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool())
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		wantID string
		role   Role
	}{
		{"agent", agentCert(t, ca, "agent-7"), "agent-7", RoleAgent},
		{"peer node", serverCert(t, ca, "node-2"), "node-2", RoleServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := handshake(t, conf, ClientTLSConfig(&tc.cert, ca.Pool(), "localhost"))
			if res.clientErr != nil || res.serverErr != nil {
				t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
			}
			id, role, err := PeerIdentity(&res.server)
			if err != nil {
				t.Fatalf("PeerIdentity: %v", err)
			}
			if id != tc.wantID || role != tc.role {
				t.Fatalf("PeerIdentity = %q, %q; want %q, %q", id, role, tc.wantID, tc.role)
			}
		})
	}
}

func TestMTLSNoClientCert(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	res := handshake(t, ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool()), ClientTLSConfig(nil, ca.Pool(), "localhost"))
	if res.clientErr != nil || res.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
	}
	_, _, err := PeerIdentity(&res.server)
	wantErrIs(t, err, ErrNoPeerCert)
	_, _, err = PeerIdentity(nil)
	wantErrIs(t, err, ErrNoPeerCert)
}

func TestMTLSForeignClientCertFails(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	foreign := agentCert(t, other, "agent-1")
	conf := ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool())

	// A client that insists on presenting the foreign certificate fails the handshake.
	forcing := ClientTLSConfig(nil, ca.Pool(), "localhost")
	forcing.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	res := handshake(t, conf, forcing)
	if res.serverErr == nil {
		t.Fatal("server accepted a client certificate from another CA")
	}
	if res.clientErr == nil {
		t.Fatal("client did not learn that its certificate was refused")
	}

	// crypto/tls's own client sends a certificate only if its issuer is among the
	// server's acceptable CAs; otherwise it connects without one, and the server
	// sees no identity.
	res = handshake(t, conf, ClientTLSConfig(&foreign, ca.Pool(), "localhost"))
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
	}
	_, _, err := PeerIdentity(&res.server)
	wantErrIs(t, err, ErrNoPeerCert)
}

func TestClientRefusesServerFromOtherCA(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	res := handshake(t, ServerTLSConfig(serverCert(t, other, "node-1"), other.Pool()), ClientTLSConfig(nil, ca.Pool(), "localhost"))
	if res.clientErr == nil {
		t.Fatal("client trusted a server from another CA")
	}
}

func TestPeerIdentityRejects(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	agent := agentCert(t, ca, "agent-1")
	_, _, err := PeerIdentity(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{agent.Leaf}})
	wantErrIs(t, err, ErrUnverifiedPeer)

	for _, subj := range []pkix.Name{
		{CommonName: "x", OrganizationalUnit: []string{"root"}},
		{CommonName: "x", OrganizationalUnit: []string{"agent", "admin"}},
		{CommonName: "x"},
		{OrganizationalUnit: []string{"agent"}},
	} {
		der, err := ca.issue(&x509.Certificate{Subject: subj, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, agent.Leaf.PublicKey, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert()}}}
		if _, _, err := PeerIdentity(cs); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("subject %v: PeerIdentity = %v, want ErrBadIdentity", subj, err)
		}
	}
}

func TestTLSConfigs(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	cert := serverCert(t, ca, "node-1")
	s := ServerTLSConfig(cert, ca.Pool())
	if s.MinVersion != tls.VersionTLS13 || s.ClientAuth != tls.VerifyClientCertIfGiven || s.ClientCAs == nil ||
		!slices.Equal(s.NextProtos, []string{"h3", "h2", "http/1.1"}) || len(s.Certificates) != 1 {
		t.Fatalf("server config: %+v", s)
	}
	c := ClientTLSConfig(nil, ca.Pool(), "cp.example.com")
	if c.MinVersion != tls.VersionTLS13 || c.RootCAs == nil || c.ServerName != "cp.example.com" || len(c.Certificates) != 0 ||
		!slices.Equal(c.NextProtos, []string{"h2", "http/1.1"}) || c.InsecureSkipVerify {
		t.Fatalf("client config: %+v", c)
	}
	if c := ClientTLSConfig(&cert, ca.Pool(), ""); len(c.Certificates) != 1 {
		t.Fatal("client certificate not set")
	}
	if p := PinnedTLSConfig(ca.Pin()); p.MinVersion != tls.VersionTLS13 || p.VerifyConnection == nil {
		t.Fatalf("pinned config: %+v", p)
	}
}

// TestHTTPEnrollThenMTLS walks the agent's path through net/http: enroll over a
// pinned connection without a certificate, then call again with the issued one.
func TestHTTPEnrollThenMTLS(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, role, err := PeerIdentity(r.TLS)
		switch {
		case errors.Is(err, ErrNoPeerCert):
			io.WriteString(w, "anonymous "+r.Proto)
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			io.WriteString(w, string(role)+":"+id+" "+r.Proto)
		}
	}))
	srv.TLS = ServerTLSConfig(serverCert(t, ca, "node-1"), ca.Pool())
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the pin mismatch below is expected
	srv.StartTLS()
	defer srv.Close()

	get := func(conf *tls.Config) (string, error) {
		tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}

	if got, err := get(PinnedTLSConfig(ca.Pin())); err != nil || got != "anonymous HTTP/2.0" {
		t.Fatalf("pinned GET = %q, %v", got, err)
	}
	other := newTestCA(t, "Other CA")
	if _, err := get(PinnedTLSConfig(other.Pin())); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("GET pinning another CA: %v, want ErrPinMismatch", err)
	}
	agent := agentCert(t, ca, "agent-9")
	if got, err := get(ClientTLSConfig(&agent, ca.Pool(), "")); err != nil || got != "agent:agent-9 HTTP/2.0" {
		t.Fatalf("mTLS GET = %q, %v", got, err)
	}
}
