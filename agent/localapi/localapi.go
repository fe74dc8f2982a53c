// Package localapi serves the agent's local API (AgentService) on a loopback address:
// scripts and legacy systems publish events through it, and `crossdock agent status`
// reads the agent's state.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
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
//
// The local API has no authentication: whoever reaches it can publish events. On a
// loopback address it answers only requests whose Host is a loopback name (localhost,
// 127.0.0.1, [::1]) with the listening port, so a web page the host's browser opens
// cannot reach it by DNS rebinding; on any other address it warns at start.
func Serve(ctx context.Context, ln net.Listener, agent Agent, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle(agentv1connect.NewAgentServiceHandler(&service{agent: agent}, connect.WithReadMaxBytes(64<<20)))
	var handler http.Handler = mux
	if port, ok := loopbackPort(ln.Addr()); ok {
		handler = hostCheck(mux, port, logger)
	} else if _, isTCP := ln.Addr().(*net.TCPAddr); isTCP {
		logger.Warn("the local API listens on a non-loopback address and has no authentication: anyone who can reach it can publish events as this agent; "+
			"bind it to 127.0.0.1 (local_addr), or firewall it to the hosts that publish (docs/connectors.md, Protecting the local API)",
			"addr", ln.Addr().String())
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
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

// loopbackPort returns the port of a TCP address on a loopback IP.
func loopbackPort(a net.Addr) (string, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok || !t.IP.IsLoopback() {
		return "", false
	}
	return strconv.Itoa(t.Port), true
}

// AllowedHost reports whether a request's Host may reach a local API listening on a
// loopback address at port: localhost or a loopback IP, with that port.
func AllowedHost(host, port string) bool {
	h, p, err := net.SplitHostPort(host)
	if err != nil || p != port {
		return false
	}
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback() && !strings.Contains(h, "%")
}

// hostCheck refuses requests whose Host is not a loopback name with the local API's
// port, with 403 and a Connect error body (permission_denied to Connect clients).
func hostCheck(next http.Handler, port string, logger *slog.Logger) http.Handler {
	var lastWarn atomic.Int64 // unix nanos; a hostile page may retry in a loop
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if AllowedHost(r.Host, port) {
			next.ServeHTTP(w, r)
			return
		}
		now, last := time.Now().UnixNano(), lastWarn.Load()
		if now-last >= int64(time.Minute) && lastWarn.CompareAndSwap(last, now) {
			logger.Warn("local API refused a request for another host name (DNS rebinding from a browser?); logged at most once a minute",
				"host", r.Host, "remote", r.RemoteAddr)
		}
		msg := fmt.Sprintf("host %q is not served: the local API answers only localhost:%s, 127.0.0.1:%s or [::1]:%s", r.Host, port, port, port)
		b, _ := json.Marshal(map[string]string{"code": "permission_denied", "message": msg})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write(b)
	})
}
