package api

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/pki"
)

// AdminAuth is a Connect interceptor that requires an admin bearer token on every call.
type AdminAuth struct {
	Ledger *ledger.Ledger
}

var _ connect.Interceptor = (*AdminAuth)(nil)

func (a *AdminAuth) check(header string) error {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("admin token required: pass --token, set CROSSDOCK_TOKEN, or use the config file written at bootstrap"))
	}
	id, secret, err := pki.ParseAdminToken(raw)
	if err != nil {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("admin token: %w", err))
	}
	want, ok, err := a.Ledger.AdminTokenHash(id)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	if !ok || !pki.EqualHash(want, pki.HashSecret(secret)) {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("admin token not recognised by this cluster"))
	}
	return nil
}

// WrapUnary checks unary calls.
func (a *AdminAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(req.Header().Get("Authorization")); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient is unused on the server side.
func (a *AdminAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler checks streaming calls.
func (a *AdminAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.check(conn.RequestHeader().Get("Authorization")); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
