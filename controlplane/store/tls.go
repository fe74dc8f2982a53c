package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/crossdock/crossdock/internal/pki"
)

// TLSStreamLayer carries raft traffic over mutual TLS. Both ends present a node
// certificate (role server) issued by the cluster CA; anything else is refused during
// the handshake. Host names are not checked: raft addresses are often bare IPs, and
// only cluster nodes hold server certificates from this CA.
type TLSStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
}

var _ raft.StreamLayer = (*TLSStreamLayer)(nil)

// NewTLSStreamLayer serves raft on ln (bound by the caller, so its address can be
// announced before the certificates exist); advertise (ln's address when empty) is what
// other nodes dial.
func NewTLSStreamLayer(ln net.Listener, advertise string, cert tls.Certificate, ca *x509.CertPool) (*TLSStreamLayer, error) {
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("store: raft advertise address %q: %w", advertise, err)
		}
		adv = a
	} else if a := ln.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("store: raft listens on %s; give an address other nodes can dial (--raft-advertise)", ln.Addr())
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("raft peer sent no certificate: %w", pki.ErrNoPeerCert)
		}
		opts := x509.VerifyOptions{Roots: ca, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		chains, err := cs.PeerCertificates[0].Verify(opts)
		if err != nil {
			return fmt.Errorf("raft peer certificate: %w", err)
		}
		cs.VerifiedChains = chains
		if _, role, err := pki.PeerIdentity(&cs); err != nil || role != pki.RoleServer {
			return errors.New("raft peer certificate is not a control plane node's")
		}
		return nil
	}
	base := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		InsecureSkipVerify:     true, // replaced by verify: chain to the cluster CA, role server
		VerifyConnection:       verify,
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{"crossdock-raft"},
		SessionTicketsDisabled: true,
	}
	return &TLSStreamLayer{ln: ln, advertise: adv, server: base, client: base.Clone()}, nil
}

// Accept waits for the next raft connection.
func (t *TLSStreamLayer) Accept() (net.Conn, error) {
	c, err := t.ln.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, t.server), nil
}

// Dial opens a raft connection to another node.
func (t *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), t.client)
	if err != nil {
		return nil, fmt.Errorf("store: raft dial %s: %w", address, err)
	}
	return c, nil
}

// Close stops listening.
func (t *TLSStreamLayer) Close() error { return t.ln.Close() }

// Addr is the advertised address.
func (t *TLSStreamLayer) Addr() net.Addr { return t.advertise }
