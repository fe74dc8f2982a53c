package api

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Operators and roles: named admin credentials with a role and an expiry, checked by
// AdminAuth; every mutating admin call recorded through raft (docs/fleet.md).

// Headers AdminAuth sets on an authenticated call (overwriting whatever the client
// sent): the credential's name and role, for handlers and the history.
const (
	ActorHeader = "X-Crossdock-Actor"
	RoleHeader  = "X-Crossdock-Role"
)

// BootstrapActor names the admin token written at bootstrap.
const BootstrapActor = "bootstrap"

// operatorProcedures are the mutating calls an operator may make: retry, replay, apply
// routing. Every other mutating call needs admin.
var operatorProcedures = []string{
	"/crossdock.routing.v1.RoutingService/ApplyDocuments",
	"/crossdock.routing.v1.RoutingService/Rollback",
	"/crossdock.routing.v1.RoutingService/DeleteDocument",
	"/crossdock.delivery.v1.DeliveryService/RetryDeadLetters",
	"/crossdock.delivery.v1.DeliveryService/StartReplay",
	"/crossdock.admin.v1.AdminService/ReplayArchive",
	"/crossdock.admin.v1.FleetService/SetAgentLabels",
}

// RequiredRole is the weakest role allowed to call procedure: reads (List, Get,
// Describe, Tail, Test) viewer; retry, replay and apply routing operator; the rest
// (tokens, credentials, partners' keys, cluster membership, snapshots, restore) admin.
func RequiredRole(procedure string) string {
	if slices.Contains(operatorProcedures, procedure) {
		return "operator"
	}
	method := path.Base(procedure)
	for _, p := range []string{"List", "Get", "Describe", "Tail", "Test"} {
		if strings.HasPrefix(method, p) {
			return "viewer"
		}
	}
	return "admin"
}

func roleRank(r string) int { return slices.Index(ledger.Roles, r) }

// principal is who makes a call.
type principal struct{ name, role string }

// authenticate finds the credential of a bearer token: a named credential, or the
// bootstrap admin token.
func (a *AdminAuth) authenticate(header string) (principal, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return principal{}, connect.NewError(connect.CodeUnauthenticated, errors.New("admin token required: pass --token, set CROSSDOCK_TOKEN, or use the config file written at bootstrap"))
	}
	id, secret, err := pki.ParseAdminToken(raw)
	if err != nil {
		return principal{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("admin token: %w", err))
	}
	c, ok, err := a.Ledger.AdminCredential(id)
	if err != nil {
		return principal{}, connect.NewError(connect.CodeInternal, err)
	}
	if ok {
		switch {
		case !pki.EqualHash(c.GetSecretSha256(), pki.HashSecret(secret)):
			return principal{}, connect.NewError(connect.CodeUnauthenticated, errors.New("admin token not recognised by this cluster"))
		case c.GetRevoked():
			return principal{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("credential %q was revoked at %s", c.GetName(), c.GetRevokedAt().AsTime().UTC().Format(time.RFC3339)))
		case !c.GetExpiresAt().AsTime().After(time.Now()):
			return principal{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("credential %q expired at %s; an admin creates a new one (crossdock access tokens create)", c.GetName(), c.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)))
		}
		return principal{name: c.GetName(), role: c.GetRole()}, nil
	}
	want, ok, err := a.Ledger.AdminTokenHash(id)
	if err != nil {
		return principal{}, connect.NewError(connect.CodeInternal, err)
	}
	if !ok || !pki.EqualHash(want, pki.HashSecret(secret)) {
		return principal{}, connect.NewError(connect.CodeUnauthenticated, errors.New("admin token not recognised by this cluster"))
	}
	return principal{name: BootstrapActor, role: "admin"}, nil
}

// authorize authenticates a call and checks its role; the principal is returned also
// when the role is refused, for the audit.
func (a *AdminAuth) authorize(procedure string, h interface{ Get(string) string }) (principal, error) {
	p, err := a.authenticate(h.Get("Authorization"))
	if err != nil {
		return p, err
	}
	if need := RequiredRole(procedure); roleRank(p.role) < roleRank(need) {
		return p, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs the %s role; credential %q is %s", path.Base(procedure), need, p.name, p.role))
	}
	return p, nil
}

// audit records a mutating call through raft. A failure to record is logged: the
// call itself has happened (or was refused) already.
func (a *AdminAuth) audit(procedure string, p principal, err error) {
	if a.Propose == nil || RequiredRole(procedure) == "viewer" {
		return
	}
	outcome := "ok"
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnavailable {
			return // not the leader (the CLI follows it) or shutting down: nothing happened
		}
		outcome = connect.CodeOf(err).String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, perr := a.Propose(ctx, storev1.CommandType_COMMAND_TYPE_RECORD_AUDIT, &storev1.RecordAudit{Record: &storev1.AuditRecord{
		At: timestamppb.Now(), Actor: p.name, Role: p.role, Procedure: procedure, Outcome: outcome,
	}})
	if perr != nil && a.Logger != nil {
		a.Logger.Warn("audit record not written", "procedure", procedure, "actor", p.name, "outcome", outcome, "err", perr)
	}
}

// requireAdminForKinds refuses partner and tier documents to callers below admin:
// partners are the admin's.
func requireAdminForKinds(h interface{ Get(string) string }, kinds ...routing.Kind) error {
	role := h.Get(RoleHeader)
	if role == "" || role == "admin" {
		return nil
	}
	for _, k := range kinds {
		if k == routing.KindPartner || k == routing.KindTier {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s documents need the admin role; this credential is %s", k, role))
		}
	}
	return nil
}

// Access serves AccessService.
type Access struct {
	*Backend
}

var _ adminv1connect.AccessServiceHandler = (*Access)(nil)

// DefaultCredentialTTL and MaxCredentialTTL bound a credential's lifetime.
const (
	DefaultCredentialTTL = 30 * 24 * time.Hour
	MaxCredentialTTL     = 366 * 24 * time.Hour
)

func toCredential(c *storev1.AdminCredential) *adminv1.Credential {
	return &adminv1.Credential{Name: c.GetName(), Role: c.GetRole(), Id: c.GetId(), CreatedAt: c.GetCreatedAt(), ExpiresAt: c.GetExpiresAt(),
		Revoked: c.GetRevoked(), RevokedAt: c.GetRevokedAt(), CreatedBy: c.GetCreatedBy()}
}

// CreateCredential makes a named credential with a role and an expiry.
func (a *Access) CreateCredential(ctx context.Context, req *connect.Request[adminv1.CreateCredentialRequest]) (*connect.Response[adminv1.CreateCredentialResponse], error) {
	name, role := req.Msg.GetName(), req.Msg.GetRole()
	if !canonical.ValidName(name) || name == BootstrapActor {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.' (and not %q)", name, BootstrapActor))
	}
	if roleRank(role) < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("role: %q is not viewer, operator or admin", role))
	}
	ttl := DefaultCredentialTTL
	if d := req.Msg.GetTtl(); d != nil {
		ttl = d.AsDuration()
	}
	if ttl <= 0 || ttl > MaxCredentialTTL {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("ttl: %s is outside (0, %s]", ttl, MaxCredentialTTL))
	}
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	id, secret, full, err := pki.NewAdminToken()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	now := time.Now()
	c := &storev1.AdminCredential{Id: id, Name: name, Role: role, SecretSha256: pki.HashSecret(secret),
		CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(ttl)), CreatedBy: req.Header().Get(ActorHeader)}
	if err := a.fleetCommand(ctx, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_CREDENTIAL, &storev1.PutAdminCredential{Credential: c}); err != nil {
		return nil, err
	}
	a.Logger.Info("admin credential created", "name", name, "role", role, "expires_at", c.GetExpiresAt().AsTime(), "by", c.GetCreatedBy(), "audit", true)
	return connect.NewResponse(&adminv1.CreateCredentialResponse{Token: full, Credential: toCredential(c)}), nil
}

// ListCredentials lists every credential, without secrets.
func (a *Access) ListCredentials(ctx context.Context, req *connect.Request[adminv1.ListCredentialsRequest]) (*connect.Response[adminv1.ListCredentialsResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	cs, err := a.Store.Ledger().AdminCredentials()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &adminv1.ListCredentialsResponse{}
	for _, c := range cs {
		out.Credentials = append(out.Credentials, toCredential(c))
	}
	slices.SortFunc(out.Credentials, func(x, y *adminv1.Credential) int { return strings.Compare(x.GetName(), y.GetName()) })
	return connect.NewResponse(out), nil
}

// RevokeCredential revokes the live credential of a name.
func (a *Access) RevokeCredential(ctx context.Context, req *connect.Request[adminv1.RevokeCredentialRequest]) (*connect.Response[adminv1.RevokeCredentialResponse], error) {
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	if err := a.fleetCommand(ctx, storev1.CommandType_COMMAND_TYPE_REVOKE_ADMIN_CREDENTIAL, &storev1.RevokeAdminCredential{Name: req.Msg.GetName(), At: timestamppb.Now()}); err != nil {
		return nil, err
	}
	a.Logger.Info("admin credential revoked", "name", req.Msg.GetName(), "by", req.Header().Get(ActorHeader), "audit", true)
	return connect.NewResponse(&adminv1.RevokeCredentialResponse{}), nil
}

// ListAudit lists audit records, filtered.
func (a *Access) ListAudit(ctx context.Context, req *connect.Request[adminv1.ListAuditRequest]) (*connect.Response[adminv1.ListAuditResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	limit := int(req.Msg.GetLimit())
	if limit == 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	m := req.Msg
	recs, err := a.Store.Ledger().Audit(func(r *storev1.AuditRecord) bool {
		return (m.GetActor() == "" || r.GetActor() == m.GetActor()) &&
			(m.GetKind() == "" || strings.Contains(r.GetProcedure(), m.GetKind())) &&
			(m.GetSince() == nil || !r.GetAt().AsTime().Before(m.GetSince().AsTime()))
	})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if len(recs) > limit {
		recs = recs[len(recs)-limit:]
	}
	out := &adminv1.ListAuditResponse{}
	for _, r := range recs {
		out.Entries = append(out.Entries, &adminv1.AuditEntry{At: r.GetAt(), Actor: r.GetActor(), Role: r.GetRole(), Procedure: r.GetProcedure(), Outcome: r.GetOutcome()})
	}
	return connect.NewResponse(out), nil
}

func (b *Backend) fleetCommand(ctx context.Context, typ storev1.CommandType, msg proto.Message) error {
	res, err := b.Store.Propose(ctx, typ, msg)
	if err != nil {
		return b.storeError(err)
	}
	if r, _ := res.(*storev1.FleetCommandResult); r.GetError() != "" {
		code := connect.CodeFailedPrecondition
		if strings.HasPrefix(r.GetError(), ledger.ErrInvalidCommand.Error()) {
			code = connect.CodeInvalidArgument
		}
		return connect.NewError(code, errors.New(r.GetError()))
	}
	return nil
}
