package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Role is what a certificate's holder is to the cluster. It is stored as the
// certificate subject's single OrganizationalUnit.
type Role string

// Roles.
const (
	RoleAgent  Role = "agent"
	RoleServer Role = "server"
	RoleAdmin  Role = "admin"
)

func (r Role) valid() bool {
	return r == RoleAgent || r == RoleServer || r == RoleAdmin
}

const (
	// caValidity is the lifetime of a CA made by NewCA.
	caValidity = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a peer whose clock is slightly behind
	// accepts a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
	// pinPrefix starts every CA pin.
	pinPrefix = "sha256:"

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
)

// CA is the cluster certificate authority. It is immutable once made and safe for
// concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// NewCA creates a self-signed CA with a new ECDSA P-256 key, valid for 10 years,
// that may sign leaf certificates only (MaxPathLen 0).
func NewCA(commonName string) (*CA, error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, errors.New("pki: new CA: common name is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Crossdock"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: parse certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: encodePEM(pemCertificate, der), key: key}, nil
}

// LoadCA loads a CA from its PEM certificate and PEM private key (PKCS#8, SEC 1 or
// PKCS#1), as written by CertPEM and KeyPEM. It checks that the certificate is a CA
// certificate and that the key belongs to it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA certificate: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("pki: load CA: %w: certificate %q is not a CA certificate", ErrInvalidCA, cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: load CA: %w: certificate %q may not sign certificates", ErrInvalidCA, cert.Subject.CommonName)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("pki: load CA: %w: the private key does not belong to certificate %q", ErrInvalidCA, cert.Subject.CommonName)
	}
	return &CA{cert: cert, certPEM: encodePEM(pemCertificate, cert.Raw), key: key}, nil
}

// CertPEM returns the CA certificate, PEM encoded.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// KeyPEM returns the CA private key, PEM encoded PKCS#8. Guard it: it can mint any
// identity in the cluster.
func (c *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode CA key: %w", err)
	}
	return encodePEM(pemPrivateKey, der), nil
}

// Cert returns the parsed CA certificate. Callers must not modify it.
func (c *CA) Cert() *x509.Certificate { return c.cert }

// Pool returns a new certificate pool holding only the CA certificate.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Pin returns the CA pin: "sha256:" followed by the lowercase hex SHA-256 of the CA
// certificate's DER SubjectPublicKeyInfo (like kubeadm's discovery token CA hash).
// It stays the same when the CA certificate is re-issued for the same key.
func (c *CA) Pin() string { return PinOf(c.cert) }

// PinOf returns the pin of any certificate (see CA.Pin), or "" for nil.
func PinOf(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// IssueServer issues a certificate for control-plane node nodeID with a new ECDSA
// P-256 key: CN=nodeID, OU=server, extended key usage server and client auth (nodes
// also dial each other). hosts are DNS names or IP addresses (IPv6 optionally in
// brackets); empty entries are skipped, and localhost, 127.0.0.1 and ::1 are always
// added. The validity is ttl, cut short at the CA's own expiry. The returned chain is
// [leaf, CA], so a pinning client (PinnedTLSConfig) can see the CA.
func (c *CA) IssueServer(nodeID string, hosts []string, ttl time.Duration) (tls.Certificate, error) {
	if err := checkName(nodeID); err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: node id: %w", err)
	}
	var dnsNames []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range append(append([]string(nil), hosts...), "localhost", "127.0.0.1", "::1") {
		h = strings.TrimSpace(h)
		if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1]
		}
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			if k := "ip:" + ip.String(); !seen[k] {
				seen[k] = true
				ips = append(ips, ip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if err := checkDNSName(h); err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: host %q: %w", h, err)
		}
		if k := "dns:" + h; !seen[k] {
			seen[k] = true
			dnsNames = append(dnsNames, h)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: nodeID, OrganizationalUnit: []string{string(RoleServer)}},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := c.issue(tmpl, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate for %q: %w", nodeID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue server certificate: parse: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// SignCSR verifies a PEM certificate signing request and signs its public key as a
// client certificate for id in role: CN=id, OU=role, extended key usage client auth,
// valid for ttl (cut short at the CA's own expiry). Everything else the CSR asks for
// (subject, SANs, extensions) is ignored. It returns the certificate, PEM encoded.
// Accepted keys: ECDSA P-256/P-384/P-521, Ed25519, RSA of at least 2048 bits.
func (c *CA) SignCSR(csrPEM []byte, id string, role Role, ttl time.Duration) ([]byte, error) {
	if err := checkName(id); err != nil {
		return nil, fmt.Errorf("pki: sign CSR: id: %w", err)
	}
	if !role.valid() {
		return nil, fmt.Errorf("pki: sign CSR: %w %q (want agent, server or admin)", ErrInvalidRole, role)
	}
	block, err := decodePEM(csrPEM, pemCSR, "NEW CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("pki: sign CSR: %w: %w", ErrInvalidCSR, err)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: sign CSR: %w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: sign CSR: %w: signature does not verify: %w", ErrInvalidCSR, err)
	}
	usage, err := keyUsageFor(csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("pki: sign CSR: %w: %w", ErrInvalidCSR, err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id, OrganizationalUnit: []string{string(role)}},
		KeyUsage:    usage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := c.issue(tmpl, csr.PublicKey, ttl)
	if err != nil {
		return nil, fmt.Errorf("pki: sign CSR for %s %q: %w", role, id, err)
	}
	return encodePEM(pemCertificate, der), nil
}

// issue fills in serial, validity and constraints and signs tmpl with the CA key.
func (c *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) ([]byte, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("ttl must be positive, got %v", ttl)
	}
	now := time.Now()
	if !now.Before(c.cert.NotAfter) {
		return nil, fmt.Errorf("the CA expired on %s", c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return der, nil
}

// NewKeyAndCSR makes a new ECDSA P-256 key and a CSR for it with subject CN
// commonName. The key is PEM PKCS#8, the CSR PEM. The CA decides the final subject.
func NewKeyAndCSR(commonName string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return encodePEM(pemPrivateKey, kder), encodePEM(pemCSR, der), nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func keyUsageFor(pub crypto.PublicKey) (x509.KeyUsage, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return x509.KeyUsageDigitalSignature, nil
		}
		return 0, errors.New("unsupported ECDSA curve")
	case ed25519.PublicKey:
		return x509.KeyUsageDigitalSignature, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return 0, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, nil
	default:
		return 0, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// checkName validates a node or agent id used as a certificate common name.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.TrimSpace(s) != s:
		return errors.New("has surrounding whitespace")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errors.New("has control characters")
		}
	}
	return nil
}

// checkDNSName accepts ASCII host names (letters, digits, '-', '_', dots, a leading
// "*." wildcard). It is a sanity check, not a full RFC 1123 validator.
func checkDNSName(h string) error {
	if len(h) > 253 {
		return errors.New("DNS name too long")
	}
	labels := strings.Split(strings.TrimPrefix(h, "*."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("not a valid DNS name or IP address")
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return errors.New("not a valid DNS name or IP address")
			}
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// decodePEM returns the first PEM block in data of one of the given types.
func decodePEM(data []byte, types ...string) (*pem.Block, error) {
	rest := data
	found := false
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		found = true
		for _, t := range types {
			if b.Type == t {
				return b, nil
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: no PEM data found", ErrInvalidPEM)
	}
	return nil, fmt.Errorf("%w: no %q PEM block found", ErrInvalidPEM, types[0])
}

// ParseCertPEM parses one PEM certificate.
func ParseCertPEM(data []byte) (*x509.Certificate, error) { return parseCertPEM(data) }

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	b, err := decodePEM(data, pemCertificate)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	b, err := decodePEM(data, pemPrivateKey, "EC PRIVATE KEY", "RSA PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	var key any
	switch b.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	return s, nil
}
