package uplink

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/crossdock/crossdock/internal/tracing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// TestSinkWriteSpan: a sink write the control plane delivers is a child of the
// delivery attempt whose context its event carries, and the sink runs under that span
// (an order.ack it publishes continues the trace). A failed write marks the span.
func TestSinkWriteSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(tracing.Use(tp))

	_, attempt := tp.Tracer("cp").Start(context.Background(), "crossdock.deliver")
	attempt.End()
	tc := tracing.Carry(trace.ContextWithSpan(context.Background(), attempt))
	var inSink trace.SpanContext
	fail := false
	u := New(Config{Servers: []string{"x"}, Sink: func(ctx context.Context, connector string, ev *eventv1.Event) (string, error) {
		inSink = trace.SpanContextFromContext(ctx)
		if fail {
			return "", errors.New("ERP down")
		}
		return "SO-1", nil
	}})
	ev := &eventv1.Event{Id: "ev_1", Type: "order", Keys: map[string]string{"order": "o1"}, Trace: tc}
	if r := u.sinkWrite(context.Background(), &uplinkv1.SinkWrite{Connector: "erp", MessageId: "ev_1", Event: ev}); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	fail = true
	if r := u.sinkWrite(context.Background(), &uplinkv1.SinkWrite{Connector: "erp", MessageId: "ev_1", Event: ev}); r.GetError() == "" {
		t.Fatal("the failing sink's write reported no error")
	}
	var writes []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == tracing.SpanSinkWrite {
			writes = append(writes, s)
		}
	}
	if len(writes) != 2 {
		t.Fatalf("%d sink write spans, want 2", len(writes))
	}
	for _, w := range writes {
		if w.Parent.SpanID() != attempt.SpanContext().SpanID() || w.SpanContext.TraceID() != attempt.SpanContext().TraceID() {
			t.Errorf("sink write span parent %s trace %s; want the attempt %s", w.Parent.SpanID(), w.SpanContext.TraceID(), attempt.SpanContext().SpanID())
		}
	}
	if inSink.SpanID() != writes[1].SpanContext.SpanID() {
		t.Errorf("the sink ran under span %s, not its write span %s", inSink.SpanID(), writes[1].SpanContext.SpanID())
	}
	if writes[0].Status.Code == writes[1].Status.Code {
		t.Errorf("the failed write's span status (%v) is the same as the good one's", writes[1].Status.Code)
	}
}
