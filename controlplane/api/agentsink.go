package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/crossdock/crossdock/controlplane/delivery"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// AgentSinks delivers events to sink connectors on agents over the agents' own uplink
// streams (the downlink): the control plane never dials an agent, which sits behind the
// distributor's firewall. It implements delivery.AgentSink for the node the agents
// stream to, the leader, which is also where the delivery engine runs.
type AgentSinks struct {
	mu      sync.Mutex
	streams map[string]*agentStream // by agent id: the newest stream wins
	nextID  atomic.Uint64
}

var _ delivery.AgentSink = (*AgentSinks)(nil)

// ErrAgentOffline is returned (wrapped) when the agent has no stream to this node; the
// delivery engine retries.
var ErrAgentOffline = errors.New("agent not connected to this node")

// agentStream is one agent's open stream: a send that is safe for concurrent use and the
// writes waiting for their results.
type agentStream struct {
	send func(*uplinkv1.StreamResponse) error

	mu      sync.Mutex
	waiting map[string]chan *uplinkv1.SinkResult
	closed  bool
}

// attach registers an agent's stream; the returned func detaches it and fails the
// writes still waiting on it (they are retried on the agent's next stream).
func (s *AgentSinks) attach(agentID string, send func(*uplinkv1.StreamResponse) error) (*agentStream, func()) {
	as := &agentStream{send: send, waiting: map[string]chan *uplinkv1.SinkResult{}}
	s.mu.Lock()
	if s.streams == nil {
		s.streams = map[string]*agentStream{}
	}
	s.streams[agentID] = as
	s.mu.Unlock()
	return as, func() {
		s.mu.Lock()
		if s.streams[agentID] == as {
			delete(s.streams, agentID)
		}
		s.mu.Unlock()
		as.mu.Lock()
		as.closed = true
		for id, ch := range as.waiting {
			close(ch)
			delete(as.waiting, id)
		}
		as.mu.Unlock()
	}
}

// result hands a SinkResult to the write waiting for it; unknown ids (a write that timed
// out) are dropped.
func (as *agentStream) result(r *uplinkv1.SinkResult) {
	as.mu.Lock()
	ch := as.waiting[r.GetRequestId()]
	delete(as.waiting, r.GetRequestId())
	as.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// Deliver sends one event to a connector on an agent and waits for the connector's
// answer.
func (s *AgentSinks) Deliver(ctx context.Context, agent, connector, messageID string, event *eventv1.Event, payload []byte) error {
	s.mu.Lock()
	as := s.streams[agent]
	s.mu.Unlock()
	if as == nil {
		return fmt.Errorf("%w", ErrAgentOffline)
	}
	id := strconv.FormatUint(s.nextID.Add(1), 10)
	ch := make(chan *uplinkv1.SinkResult, 1)
	as.mu.Lock()
	if as.closed {
		as.mu.Unlock()
		return fmt.Errorf("%w (stream closing)", ErrAgentOffline)
	}
	as.waiting[id] = ch
	as.mu.Unlock()
	forget := func() {
		as.mu.Lock()
		delete(as.waiting, id)
		as.mu.Unlock()
	}
	err := as.send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_SinkWrite{SinkWrite: &uplinkv1.SinkWrite{
		RequestId: id, Connector: connector, MessageId: messageID, Event: event, Payload: payload,
	}}})
	if err != nil {
		forget()
		return fmt.Errorf("send to agent: %w", err)
	}
	select {
	case r, ok := <-ch:
		switch {
		case !ok:
			return fmt.Errorf("%w (stream closed before the connector answered)", ErrAgentOffline)
		case r.GetError() == "":
			return nil
		case r.GetPermanent():
			return fmt.Errorf("%w: %s", delivery.ErrPermanent, r.GetError())
		default:
			return errors.New(r.GetError())
		}
	case <-ctx.Done():
		forget()
		return fmt.Errorf("waiting for the connector: %w", ctx.Err())
	}
}
