package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	c := ca.Cert()
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Fatal("CA certificate lacks CA:true")
	}
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Fatalf("MaxPathLen = %d (zero flag %v), want 0", c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("CA certificate cannot sign certificates")
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if c.Subject.CommonName != "Test CA" {
		t.Fatalf("CN = %q", c.Subject.CommonName)
	}
	if life := c.NotAfter.Sub(time.Now()); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
		t.Fatalf("CA lifetime %v, want about 10 years", life)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	if want := "sha256:" + hex.EncodeToString(sum[:]); ca.Pin() != want || PinOf(c) != want {
		t.Fatalf("Pin = %q, PinOf = %q, want %q", ca.Pin(), PinOf(c), want)
	}
	if err := checkPin(ca.Pin()); err != nil {
		t.Fatal(err)
	}
	if PinOf(nil) != "" {
		t.Fatal("PinOf(nil) not empty")
	}
	if got := mustParseCertPEM(t, ca.CertPEM()); !got.Equal(c) {
		t.Fatal("CertPEM does not hold Cert")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Fatalf("Pool does not hold the CA: %v", err)
	}
	if other := newTestCA(t, "Test CA"); other.Pin() == ca.Pin() {
		t.Fatal("two CAs share a pin")
	}
	if _, err := NewCA(" "); err == nil {
		t.Fatal("NewCA accepted an empty name")
	}
}

func TestLoadCARoundTrip(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Pin() != ca.Pin() || !bytes.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Fatal("loaded CA differs")
	}
	k2, err := loaded.KeyPEM()
	if err != nil || !bytes.Equal(k2, keyPEM) {
		t.Fatalf("loaded key differs (err %v)", err)
	}
	// The loaded CA signs certificates the original's pool trusts.
	leaf := serverCert(t, loaded, "node-1")
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Fatalf("certificate from loaded CA does not verify: %v", err)
	}

	// A SEC 1 ("EC PRIVATE KEY") key loads too.
	b, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(ca.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})); err != nil {
		t.Fatalf("LoadCA with SEC 1 key: %v", err)
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	keyPEM, _ := ca.KeyPEM()
	otherKey, _ := other.KeyPEM()
	leafKey, leafCSR, err := NewKeyAndCSR("x")
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, err := ca.SignCSR(leafCSR, "agent-1", RoleAgent, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		cert, key   []byte
		target      error
		wantMessage string
	}{
		{"garbage cert", []byte("nope"), keyPEM, ErrInvalidPEM, "no PEM data"},
		{"key as cert", keyPEM, keyPEM, ErrInvalidPEM, "CERTIFICATE"},
		{"garbage key", ca.CertPEM(), []byte("nope"), ErrInvalidPEM, "no PEM data"},
		{"other key", ca.CertPEM(), otherKey, ErrInvalidCA, "does not belong"},
		{"leaf cert", leafPEM, leafKey, ErrInvalidCA, "not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.cert, tc.key)
			wantErrIs(t, err, tc.target)
			if !strings.Contains(err.Error(), tc.wantMessage) {
				t.Fatalf("error %q does not say %q", err, tc.wantMessage)
			}
		})
	}
}

func TestIssueServer(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	hosts := []string{"cp1.example.com", "10.0.0.7", "[2001:db8::1]", "", "CP1.example.com.", "localhost", "0.0.0.0"}
	cert, err := ca.IssueServer("node-1", hosts, 24*time.Hour)
	if err != nil {
		t.Fatalf("IssueServer: %v", err)
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.Cert().Raw) {
		t.Fatal("chain is not [leaf, CA]")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.Equal(leaf) {
		t.Fatal("Leaf does not match the chain's first certificate")
	}
	if leaf.Subject.CommonName != "node-1" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{"server"}) {
		t.Fatalf("subject = %v, want CN=node-1 OU=server", leaf.Subject)
	}
	if want := []string{"cp1.example.com", "localhost"}; !slices.Equal(leaf.DNSNames, want) {
		t.Fatalf("DNS SANs = %q, want %q", leaf.DNSNames, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.7", "2001:db8::1", "0.0.0.0", "127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Fatalf("IP SANs = %q, want %q", ips, want)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("EKU = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Fatal("server certificate is a CA")
	}
	if d := leaf.NotAfter.Sub(time.Now()); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("validity %v, want about 24h", d)
	}
	for _, name := range []string{"cp1.example.com", "localhost", "10.0.0.7", "2001:db8::1", "127.0.0.1", "::1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("verify for %s (usage %v): %v", name, usage, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.example.com"}); err == nil {
		t.Error("certificate valid for a host it was not issued for")
	}
	if !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) || len(leaf.IPAddresses[0]) != net.IPv4len {
		t.Error("IPv4 SAN not stored in 4-byte form")
	}

	// A TTL beyond the CA's life is cut at the CA's expiry.
	long, err := ca.IssueServer("node-1", nil, 50*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if long.Leaf.NotAfter.After(ca.Cert().NotAfter) {
		t.Fatal("server certificate outlives the CA")
	}

	for _, bad := range []struct {
		id    string
		hosts []string
		ttl   time.Duration
	}{
		{"", nil, time.Hour},
		{"node\n1", nil, time.Hour},
		{"node-1", []string{"bad host"}, time.Hour},
		{"node-1", []string{"a..b"}, time.Hour},
		{"node-1", nil, 0},
		{"node-1", nil, -time.Hour},
	} {
		if _, err := ca.IssueServer(bad.id, bad.hosts, bad.ttl); err == nil {
			t.Errorf("IssueServer(%q, %q, %v) succeeded", bad.id, bad.hosts, bad.ttl)
		}
	}
}

func TestNewKeyAndCSR(t *testing.T) {
	keyPEM, csrPEM, err := NewKeyAndCSR("my-agent")
	if err != nil {
		t.Fatal(err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		t.Fatalf("key: %v", err)
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", key)
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("CSR PEM: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "my-agent" || !publicKeysEqual(key.Public(), csr.PublicKey) {
		t.Fatal("CSR does not match")
	}
}

// evilCSR makes a CSR that asks for much more than an agent should get.
func evilCSR(t *testing.T) (csrDER []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "requested-cn", OrganizationalUnit: []string{"admin", "server"}},
		DNSNames:    []string{"evil.example.com"},
		IPAddresses: []net.IP{net.ParseIP("10.6.6.6")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csrDER, key
}

func TestSignCSRIgnoresRequestedSubject(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	csrDER, key := evilCSR(t)
	certPEM, err := ca.SignCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), "agent-42", RoleAgent, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	c := mustParseCertPEM(t, certPEM)
	if c.Subject.CommonName != "agent-42" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"agent"}) {
		t.Fatalf("subject = %v, want CN=agent-42 OU=agent", c.Subject)
	}
	if len(c.DNSNames) != 0 || len(c.IPAddresses) != 0 || len(c.EmailAddresses) != 0 || len(c.URIs) != 0 {
		t.Fatalf("requested SANs were copied: %v %v", c.DNSNames, c.IPAddresses)
	}
	if c.IsCA {
		t.Fatal("agent certificate is a CA")
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("EKU = %v, want client auth only", c.ExtKeyUsage)
	}
	if !publicKeysEqual(key.Public(), c.PublicKey) {
		t.Fatal("certificate is not for the CSR's key")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("agent certificate does not verify as client: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Fatal("agent certificate verifies as a server certificate")
	}
	if d := c.NotAfter.Sub(time.Now()); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("validity %v, want 1h", d)
	}
	if !c.NotBefore.Before(time.Now().Add(-time.Minute)) {
		t.Fatal("NotBefore not backdated for clock skew")
	}
	// Admin role.
	certPEM, err = ca.SignCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), "alice", RoleAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if ou := mustParseCertPEM(t, certPEM).Subject.OrganizationalUnit; !slices.Equal(ou, []string{"admin"}) {
		t.Fatalf("OU = %q, want admin", ou)
	}
}

func TestSignCSRRejects(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	csrDER, _ := evilCSR(t)
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	// Tamper with the signed content while keeping the DER well formed: the CSR
	// still parses, but its signature no longer matches.
	i := bytes.Index(csrDER, []byte("requested-cn"))
	if i < 0 {
		t.Fatal("CN not found in CSR DER")
	}
	tampered := bytes.Clone(csrDER)
	copy(tampered[i:], "tampered-cnx")
	tamperedPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})
	if _, err := x509.ParseCertificateRequest(tampered); err != nil {
		t.Fatalf("tampered CSR should still parse: %v", err)
	}

	truncated := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER[:len(csrDER)/2]})

	for _, tc := range []struct {
		name   string
		csr    []byte
		id     string
		role   Role
		ttl    time.Duration
		target error
		msg    string
	}{
		{"garbage", []byte("not a csr"), "a", RoleAgent, time.Hour, ErrInvalidPEM, "no PEM data"},
		{"empty", nil, "a", RoleAgent, time.Hour, ErrInvalidCSR, "no PEM data"},
		{"wrong PEM type", ca.CertPEM(), "a", RoleAgent, time.Hour, ErrInvalidCSR, "CERTIFICATE REQUEST"},
		{"truncated DER", truncated, "a", RoleAgent, time.Hour, ErrInvalidCSR, "invalid certificate signing request"},
		{"tampered", tamperedPEM, "a", RoleAgent, time.Hour, ErrInvalidCSR, "signature does not verify"},
		{"empty id", good, "", RoleAgent, time.Hour, nil, "id: empty"},
		{"bad role", good, "a", Role("root"), time.Hour, ErrInvalidRole, "root"},
		{"zero ttl", good, "a", RoleAgent, 0, nil, "ttl must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := ca.SignCSR(tc.csr, tc.id, tc.role, tc.ttl)
			if err == nil {
				t.Fatalf("SignCSR succeeded: %s", out)
			}
			if tc.target != nil {
				wantErrIs(t, err, tc.target)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}
