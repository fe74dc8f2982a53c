package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/labels"
	"github.com/crossdock/crossdock/internal/pki"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// AgentCertTTL is how long an agent certificate is valid by default
// (Backend.AgentCertTTL). Agents renew theirs over the uplink stream when a third of its
// lifetime is left.
const AgentCertTTL = 365 * 24 * time.Hour

// Enroll trades a single-use token and a CSR for an agent certificate.
func (u *Uplink) Enroll(ctx context.Context, req *connect.Request[uplinkv1.EnrollRequest]) (*connect.Response[uplinkv1.EnrollResponse], error) {
	tok, err := pki.ParseToken(req.Msg.GetToken())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ca := u.CA()
	if tok.CAPin != ca.Pin() {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("enrollment token pins CA %s but this cluster's CA is %s: the token was made for another cluster", tok.CAPin, ca.Pin()))
	}
	if n := req.Msg.GetAgentName(); n != "" && !canonical.ValidName(n) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("agent_name: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", n))
	}
	if req.Msg.GetCsrPem() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr_pem: required"))
	}
	if err := labels.Check(req.Msg.GetLabels()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("labels: %w", err))
	}
	if !u.Store.IsLeader() {
		return nil, u.notLeader()
	}
	if rec, ok, err := u.Store.Ledger().Token(tok.ID); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	} else if ok && rec.GetToken().GetKind() == "server" {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("this is a server join token; an agent enrolls with `crossdock token create` (kind agent)"))
	}
	res, err := u.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{
		Id:           tok.ID,
		SecretSha256: pki.HashSecret(tok.Secret),
		At:           timestamppb.Now(),
		AgentName:    req.Msg.GetAgentName(),
	})
	if err != nil {
		return nil, u.storeError(err)
	}
	r, ok := res.(*storev1.ConsumeTokenResult)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected consume result %T", res))
	}
	if r.GetError() != "" {
		u.Logger.Warn("enrollment refused", "token_id", tok.ID, "reason", r.GetError(), "remote", PeerFrom(ctx).RemoteAddr)
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(r.GetError()))
	}
	certPEM, err := u.issueAgentCert(ctx, []byte(req.Msg.GetCsrPem()), r.GetAgentId(), r.GetIncarnation())
	if err != nil {
		return nil, err
	}
	if l := req.Msg.GetLabels(); len(l) > 0 {
		// Labels given at enrollment (fleet.go); a failure leaves the agent enrolled
		// without them: `crossdock agents label` sets them.
		if err := u.setLabels(ctx, r.GetAgentId(), l, "enrollment"); err != nil {
			u.Logger.Error("record the labels given at enrollment", "agent", r.GetAgentId(), "err", err)
		}
	}
	if r.GetIncarnation() > 1 {
		// The name was enrolled before: the old incarnation is retired.
		u.Registry.Kick(r.GetAgentId(), fmt.Errorf("agent %s was enrolled again (incarnation %d); this identity is retired", r.GetAgentId(), r.GetIncarnation()))
	}
	u.Logger.Info("agent enrolled", "agent", r.GetAgentId(), "incarnation", r.GetIncarnation(), "token_id", tok.ID, "remote", PeerFrom(ctx).RemoteAddr, "audit", true)
	return connect.NewResponse(&uplinkv1.EnrollResponse{
		AgentId:        r.GetAgentId(),
		CertificatePem: string(certPEM),
		CaPem:          string(ca.CertPEM()),
	}), nil
}

// issueAgentCert signs a certificate for an agent's incarnation and records it, so
// the agent may connect with it.
func (b *Backend) issueAgentCert(ctx context.Context, csrPEM []byte, agentID string, incarnation uint64) ([]byte, error) {
	certPEM, err := b.CA().SignCSR(csrPEM, agentID, pki.RoleAgent, b.agentCertTTL())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("csr_pem: %w", err))
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	res, err := b.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_AGENT_CERT, &storev1.PutAgentCert{
		AgentId: agentID, Incarnation: incarnation,
		Cert: &storev1.AgentCert{
			Serial: cert.SerialNumber.Bytes(), NotAfter: timestamppb.New(cert.NotAfter), IssuedAt: timestamppb.Now(),
		},
	})
	if err != nil {
		return nil, b.storeError(err)
	}
	if r, _ := res.(*storev1.AgentCommandResult); r.GetError() != "" {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(r.GetError()))
	}
	return certPEM, nil
}

// agentIdentity returns the agent id and certificate from a verified client
// certificate.
func agentIdentity(ctx context.Context) (string, *x509.Certificate, error) {
	p := PeerFrom(ctx)
	id, role, err := pki.PeerIdentity(p.TLS)
	if err != nil {
		if errors.Is(err, pki.ErrNoPeerCert) {
			return "", nil, connect.NewError(connect.CodeUnauthenticated, errors.New("client certificate required: enroll this agent first (crossdock agent --enroll-token TOKEN)"))
		}
		return "", nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("client certificate: %w", err))
	}
	if role != pki.RoleAgent {
		return "", nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("certificate role %q may not stream events; only agents may", role))
	}
	return id, p.TLS.VerifiedChains[0][0], nil
}

// admitAgent checks that an agent's record lets this certificate stream: enrolled,
// not revoked, and, from incarnations on, a certificate issued to the current one.
func admitAgent(rec *storev1.AgentRecord, ok bool, agentID string, cert *x509.Certificate) error {
	switch {
	case !ok:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("agent %s is not enrolled in this cluster: enroll it with a token from `crossdock token create --name %s`", agentID, agentID))
	case rec.GetRevoked():
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("agent %s was revoked at %s (%s): enroll it again with a token from `crossdock token create --name %s --replace`",
			agentID, rec.GetRevokedAt().AsTime().UTC().Format(time.RFC3339), rec.GetRevokedReason(), agentID))
	case rec.GetIncarnation() == 0 && len(rec.GetCerts()) == 0:
		return nil // enrolled before certificates were recorded
	}
	serial := cert.SerialNumber.Bytes()
	for _, c := range rec.GetCerts() {
		if bytes.Equal(c.GetSerial(), serial) {
			return nil
		}
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this certificate (serial %x) is not one of agent %s's current certificates: the agent was enrolled again (incarnation %d) or renewed its certificate elsewhere; this identity is retired",
		serial, agentID, rec.GetIncarnation()))
}
