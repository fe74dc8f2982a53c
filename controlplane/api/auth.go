package api

import (
	"context"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// AdminAuth is a Connect interceptor that requires an admin bearer token on every call:
// a named credential whose role allows the procedure (access.go), or the bootstrap
// token. It sets ActorHeader and RoleHeader for the handlers and, with Propose set,
// records every mutating call through raft.
type AdminAuth struct {
	Ledger *ledger.Ledger
	// Propose writes audit records; nil records nothing.
	Propose func(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error)
	Logger  *slog.Logger
}

var _ connect.Interceptor = (*AdminAuth)(nil)

func setPrincipal(h http.Header, p principal) {
	h.Set(ActorHeader, p.name)
	h.Set(RoleHeader, p.role)
}

// WrapUnary checks unary calls.
func (a *AdminAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		p, err := a.authorize(proc, req.Header())
		if err != nil {
			if p.name != "" {
				a.audit(proc, p, err)
			}
			return nil, err
		}
		setPrincipal(req.Header(), p)
		res, err := next(ctx, req)
		a.audit(proc, p, err)
		return res, err
	}
}

// WrapStreamingClient is unused on the server side.
func (a *AdminAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler checks streaming calls.
func (a *AdminAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		p, err := a.authorize(proc, conn.RequestHeader())
		if err != nil {
			if p.name != "" {
				a.audit(proc, p, err)
			}
			return err
		}
		setPrincipal(conn.RequestHeader(), p)
		err = next(ctx, conn)
		a.audit(proc, p, err)
		return err
	}
}

// check authenticates an admin bearer token (any role): the guard's check before a
// body is read, and the partner stream's admin fallback.
func (a *AdminAuth) check(header string) error {
	_, err := a.authenticate(header)
	return err
}
