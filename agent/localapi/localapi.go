// Package localapi serves the agent's local API (AgentService) on a loopback address:
// scripts and legacy systems publish events through it, and `crossdock agent status`
// reads the agent's state.
package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/canonical"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1/agentv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// MaxPublishEvents bounds one Publish call: the events of a call are appended in one
// outbox transaction, all or nothing.
const MaxPublishEvents = 2000

// Agent is what the local API needs from the agent.
type Agent interface {
	Publish(ctx context.Context, connector string, events []*eventv1.Event) (*agentv1.PublishResponse, error)
	Status() *agentv1.AgentStatus
}

type service struct {
	agent Agent
}

func (s *service) Publish(ctx context.Context, req *connect.Request[agentv1.PublishRequest]) (*connect.Response[agentv1.PublishResponse], error) {
	if n := len(req.Msg.GetEvents()); n > MaxPublishEvents {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d events in one publish; send at most %d per call", n, MaxPublishEvents))
	}
	res, err := s.agent.Publish(ctx, req.Msg.GetConnector(), req.Msg.GetEvents())
	if err != nil {
		switch {
		case errors.Is(err, canonical.ErrInvalid):
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		case errors.Is(err, outbox.ErrQuotaFull), errors.Is(err, outbox.ErrBatchTooLarge):
			return nil, connect.NewError(connect.CodeResourceExhausted, err)
		case errors.Is(err, outbox.ErrDamaged):
			// Nothing more is written until the outbox is repaired.
			return nil, connect.NewError(connect.CodeFailedPrecondition, err)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			return nil, connect.NewError(connect.CodeDeadlineExceeded, err)
		}
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(res), nil
}

func (s *service) GetStatus(ctx context.Context, req *connect.Request[agentv1.GetStatusRequest]) (*connect.Response[agentv1.GetStatusResponse], error) {
	return connect.NewResponse(&agentv1.GetStatusResponse{Status: s.agent.Status()}), nil
}

// Serve serves the local API on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, agent Agent, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(&service{agent: agent}, connect.WithReadMaxBytes(64<<20)))
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("local API shutdown", "err", err)
	}
	return nil
}
