package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLSConfig is the control plane's listener config: TLS 1.3, the node
// certificate, and client certificates verified against ca when a client sends one
// (agents and nodes do; the admin CLI authenticates with a bearer token instead).
// Handlers that need an identity call PeerIdentity. NextProtos lists h3, h2 and
// http/1.1 so the same config serves QUIC and TCP.
func ServerTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca,
		NextProtos:   []string{"h3", "h2", "http/1.1"},
	}
}

// ClientTLSConfig dials a control-plane node verified against ca, with the usual
// host name check against serverName (empty: taken from the dialed address by
// net/http). cert is the client's certificate, or nil for a client that
// authenticates otherwise. NextProtos is h2, http/1.1; set it to h3 for QUIC.
func ClientTLSConfig(cert *tls.Certificate, ca *x509.CertPool, serverName string) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    ca,
		ServerName: serverName,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// PinnedTLSConfig is for enrollment, when the agent has only the CA pin from its
// token and not yet the CA certificate. The standard verification is off
// (InsecureSkipVerify) and replaced by VerifyConnection, which requires that
//
//   - the server presents, after its leaf, a CA certificate whose pin (see CA.Pin)
//     equals pin; otherwise the error wraps ErrPinMismatch and names both pins;
//   - the leaf verifies against that CA as the only root, with extended key usage
//     server auth (agent certificates, client auth only, do not pass); otherwise
//     the error wraps ErrUntrustedServer.
//
// Host names: the leaf is checked against the server name when the connection
// reports one (cs.ServerName, set when the address dialed is a DNS name). When the
// address is an IP literal crypto/tls reports no server name to the callback, and
// the name check is skipped rather than failing every enrollment by IP. That loses
// nothing that matters: the pin ties the server to this cluster's CA, which issues
// server-auth certificates only to the cluster's own nodes, and any node may enroll
// an agent.
func PinnedTLSConfig(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by verifyPinned below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin)
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

func verifyPinned(cs tls.ConnectionState, pin string) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("pki: %w: the server presented no certificate", ErrUntrustedServer)
	}
	var ca *x509.Certificate
	serverPin := ""
	for _, c := range certs[1:] {
		if !c.BasicConstraintsValid || !c.IsCA {
			continue
		}
		p := PinOf(c)
		if serverPin == "" {
			serverPin = p
		}
		if p == pin {
			ca = c
			break
		}
	}
	if ca == nil {
		server := serverPin
		if server == "" {
			server = "none: no CA certificate in the chain, leaf " + PinOf(certs[0])
		}
		return fmt.Errorf("pki: %w: server CA does not match the CA pin in the enrollment token (server %s, token %s)",
			ErrPinMismatch, server, pin)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(), // none: the cluster CA signs leaves directly
		DNSName:       cs.ServerName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, err := certs[0].Verify(opts); err != nil {
		if h, ok := errors.AsType[x509.HostnameError](err); ok {
			return fmt.Errorf("pki: %w: the server's certificate %q is from the pinned CA but not valid for %q, the name dialed: %w; "+
				"dial a name it covers or add the name to the servers' certificates (crossdock server --tls-san)",
				ErrUntrustedServer, certs[0].Subject.CommonName, h.Host, err)
		}
		return fmt.Errorf("pki: %w: the server's certificate %q does not verify against the pinned CA %s: %w",
			ErrUntrustedServer, certs[0].Subject.CommonName, pin, err)
	}
	return nil
}

// PeerIdentity returns the id (CN) and role (OU) of the TLS peer from its verified
// certificate chain. It returns an error wrapping ErrNoPeerCert when the peer sent
// no certificate, ErrUnverifiedPeer when the chain was not verified (the config did
// not verify client certificates), and ErrBadIdentity when the certificate lacks a
// CN or a single OU naming a known role.
func PeerIdentity(cs *tls.ConnectionState) (id string, role Role, err error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", "", fmt.Errorf("pki: peer identity: %w", ErrNoPeerCert)
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", fmt.Errorf("pki: peer identity: %w", ErrUnverifiedPeer)
	}
	leaf := cs.VerifiedChains[0][0]
	if leaf.Subject.CommonName == "" {
		return "", "", fmt.Errorf("pki: peer identity: %w: empty common name", ErrBadIdentity)
	}
	if ou := leaf.Subject.OrganizationalUnit; len(ou) != 1 || !Role(ou[0]).valid() {
		return "", "", fmt.Errorf("pki: peer identity: %w: certificate %q has organizational units %q, want exactly one of agent, server, admin",
			ErrBadIdentity, leaf.Subject.CommonName, ou)
	}
	return leaf.Subject.CommonName, Role(leaf.Subject.OrganizationalUnit[0]), nil
}
