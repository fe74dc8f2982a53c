package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// AgentSink delivers messages to a sink connector on an agent (destination kind
// "agent"). The control plane serves it over the agents' uplink streams; the engine
// runs agent destinations only when Config.AgentSink is set.
type AgentSink interface {
	// Deliver hands one message to the connector and returns once the connector wrote it
	// (nil), could not write it now (a retryable error: agent offline, connector down),
	// or refused it for good (an error wrapping ErrPermanent). messageID is the
	// idempotency key the connector must deduplicate on. A sink connector writes
	// canonical events (pluginhost.Host.Write), so the event is given as committed;
	// payload is the route's mapping of it, for sinks that take the mapped form.
	Deliver(ctx context.Context, agent, connector, messageID string, event *eventv1.Event, payload []byte) error
}

// ErrPermanent marks an AgentSink error that no retry can fix: the message is
// dead-lettered at once.
var ErrPermanent = errors.New("refused for good")

// sendAgent delivers one message through the agent sink and classifies the outcome like
// a webhook answer.
func (w *worker) sendAgent(ctx context.Context, it *item) attemptResult {
	timeout := w.dest.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := w.e.cfg.AgentSink.Deliver(ctx, w.dest.Agent, w.dest.Connector, it.msgID, tracedEvent(ctx, it.event), it.payload)
	r := attemptResult{took: time.Since(start)}
	switch {
	case err == nil:
		r.outcome = outcomeOK
	case errors.Is(err, ErrPermanent):
		r.outcome, r.err = outcomePermanent, fmt.Sprintf("agent %s connector %s: %v", w.dest.Agent, w.dest.Connector, err)
	default:
		r.outcome, r.err = outcomeRetry, fmt.Sprintf("agent %s connector %s: %v", w.dest.Agent, w.dest.Connector, err)
	}
	return r
}
