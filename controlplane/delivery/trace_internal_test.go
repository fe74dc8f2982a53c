package delivery

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/crossdock/crossdock/internal/tracing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestTracedEventForAgentSink: an agent sink gets the event with the attempt's span as
// its trace context (so the agent's sink write is the attempt's child); the queued
// event keeps its own, and with tracing off the event is passed as it is.
func TestTracedEventForAgentSink(t *testing.T) {
	orig := &eventv1.Event{Id: "ev_1", Trace: &eventv1.TraceContext{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	if got := tracedEvent(context.Background(), orig); got != orig {
		t.Fatal("tracing off: the event was copied")
	}
	tp := sdktrace.NewTracerProvider()
	defer tracing.Use(tp)()
	ctx, span := tp.Tracer("t").Start(tracing.Parent(context.Background(), orig.GetTrace()), tracing.SpanDeliver)
	defer span.End()
	got := tracedEvent(ctx, orig)
	sc := tracing.Remote(got.GetTrace())
	if sc.SpanID() != span.SpanContext().SpanID() || sc.TraceID() != span.SpanContext().TraceID() {
		t.Errorf("the sink's event carries %v, want the attempt's span %v", sc, span.SpanContext())
	}
	if orig.GetTrace().GetTraceparent() != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("the queued event's trace context was changed to %q", orig.GetTrace().GetTraceparent())
	}
}
