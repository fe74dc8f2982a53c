package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func TestFromEnv(t *testing.T) {
	for _, c := range []struct {
		env      map[string]string
		exporter string
		protocol string
		err      bool
	}{
		{env: nil, exporter: "none"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, exporter: "otlp", protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, exporter: "otlp", protocol: "http/protobuf"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, exporter: "otlp", protocol: "grpc"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, exporter: "otlp", protocol: "grpc"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, exporter: "none"},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, exporter: "none"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: true},
	} {
		got, err := FromEnv(func(k string) string { return c.env[k] })
		if (err != nil) != c.err {
			t.Errorf("%v: err %v, want error %v", c.env, err, c.err)
			continue
		}
		if err == nil && (got.Exporter != c.exporter || (c.protocol != "" && got.Protocol != c.protocol)) {
			t.Errorf("%v: %+v, want exporter %s protocol %s", c.env, got, c.exporter, c.protocol)
		}
	}
}

// TestStartEventCarriesContext: the publish span is a child of the trace the event
// came with, and the event then carries the publish span's context.
func TestStartEventCarriesContext(t *testing.T) {
	if Enabled() {
		t.Fatal("tracing on before Use")
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	restore := Use(tp)
	_, parent := tp.Tracer("t").Start(context.Background(), "caller")
	ev := &eventv1.Event{Id: "ev_1", Type: "order", Trace: Carry(context.Background())}
	if ev.Trace != nil {
		t.Fatalf("Carry of a context without a span = %v, want nil", ev.Trace)
	}
	ev.Trace = &eventv1.TraceContext{Traceparent: "00-" + parent.SpanContext().TraceID().String() + "-" + parent.SpanContext().SpanID().String() + "-01"}
	span := StartEvent(context.Background(), SpanPublish, ev, "a1", "publish")
	span.End()
	got := Remote(ev.Trace)
	if got.SpanID() != span.SpanContext().SpanID() || got.TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("event carries %v, want the publish span %v", got, span.SpanContext())
	}
	stubs := exp.GetSpans()
	if len(stubs) != 1 || stubs[0].Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("spans %v: want one, child of the caller's", stubs)
	}
	restore()
	if Enabled() {
		t.Error("tracing still on after restore")
	}
}
