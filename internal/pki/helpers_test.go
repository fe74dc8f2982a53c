package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func mustParseCertPEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

// agentCert enrolls a fake agent with ca and returns its TLS certificate.
func agentCert(t *testing.T, ca *CA, id string) tls.Certificate {
	t.Helper()
	keyPEM, csrPEM, err := NewKeyAndCSR("ignored")
	if err != nil {
		t.Fatalf("NewKeyAndCSR: %v", err)
	}
	certPEM, err := ca.SignCSR(csrPEM, id, RoleAgent, time.Hour)
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	return c
}

func serverCert(t *testing.T, ca *CA, id string) tls.Certificate {
	t.Helper()
	c, err := ca.IssueServer(id, nil, time.Hour)
	if err != nil {
		t.Fatalf("IssueServer: %v", err)
	}
	return c
}

type handshakeResult struct {
	server    tls.ConnectionState
	serverErr error
	clientErr error
}

// handshake runs a real TLS handshake over loopback TCP. After a successful server
// handshake the server writes one byte, which the client reads: in TLS 1.3 a client
// learns that the server rejected its certificate only on its first read.
func handshake(t *testing.T, serverConf, clientConf *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type srv struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan srv, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- srv{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(conn, serverConf)
		if err := tc.Handshake(); err != nil {
			done <- srv{err: err}
			return
		}
		_, err = tc.Write([]byte{'k'})
		done <- srv{state: tc.ConnectionState(), err: err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, clientConf)
	clientErr := tc.Handshake()
	if clientErr == nil {
		var b [1]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			clientErr = err
		}
	}
	if clientErr != nil {
		conn.Close() // unblock the server if it waits for us
	}
	s := <-done
	return handshakeResult{server: s.state, serverErr: s.err, clientErr: clientErr}
}

func wantErrIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
}
