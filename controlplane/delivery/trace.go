package delivery

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/tracing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// startAttemptSpan starts the span of one delivery attempt (tracing on only): a child
// of the first message's event trace (its publish span on the agent), linked to the
// others of a batch. ctx carries it to the request, whose traceparent names it.
func (w *worker) startAttemptSpan(ctx context.Context, items []*item) (context.Context, trace.Span) {
	head := items[0]
	var links []trace.Link
	for _, it := range items[1:] {
		if sc := tracing.Remote(it.trace); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	attrs := append(tracing.KeyAttrs(head.keys),
		tracing.AttrDestination.String(w.dest.Name), tracing.AttrRoute.String(head.route),
		tracing.AttrEventID.String(head.eventID), tracing.AttrEventType.String(head.eventType),
		tracing.AttrMessageID.String(head.msgID), tracing.AttrMessages.Int(len(items)),
		tracing.AttrAttempt.Int(len(head.attempts)+1))
	if w.dest.Kind == KindAgent {
		attrs = append(attrs, tracing.AttrAgent.String(w.dest.Agent), tracing.AttrConnector.String(w.dest.Connector))
	}
	return tracing.Tracer().Start(tracing.Parent(ctx, head.trace), tracing.SpanDeliver,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

// endAttemptSpan records an attempt's outcome and ends its span.
func endAttemptSpan(span trace.Span, res attemptResult) {
	span.SetAttributes(tracing.AttrOutcome.String(res.outcome.String()))
	if res.status != 0 {
		span.SetAttributes(tracing.AttrHTTPStatus.Int(res.status))
	}
	if res.outcome != outcomeOK {
		span.SetStatus(codes.Error, res.err)
	}
	span.End()
}

// tracedEvent is the event an agent sink receives: with tracing on, carrying the
// attempt's span (ctx) as its trace context, so the agent's sink write is its child.
func tracedEvent(ctx context.Context, ev *eventv1.Event) *eventv1.Event {
	if !tracing.Enabled() || ev == nil {
		return ev
	}
	tc := tracing.Carry(ctx)
	if tc == nil {
		return ev
	}
	c := proto.CloneOf(ev)
	c.Trace = tc
	return c
}
