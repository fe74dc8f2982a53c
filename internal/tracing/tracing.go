// Package tracing is Crossdock's OpenTelemetry tracing: set up from the standard OTEL_*
// variables (off unless they ask for it), and the helpers that carry W3C trace context
// in events (Event.trace) and on webhooks (the traceparent header), so one business
// event is one trace from its capture on an agent to the partner's answer.
//
// Off, every helper returns at once after one atomic load: the ingest path allocates
// nothing for tracing. Callers check Enabled before building attributes.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// ScopeName is the instrumentation scope of every Crossdock span.
const ScopeName = "github.com/crossdock/crossdock"

// Span names.
const (
	SpanPublish     = "crossdock.publish"      // agent: an event handed to Publish, until fsynced in the outbox
	SpanCapture     = "crossdock.capture"      // agent: an event a source connector captured, until fsynced
	SpanUplinkBatch = "crossdock.uplink.batch" // agent: one uplink batch, from send to the control plane's ack
	SpanCommit      = "crossdock.commit"       // server: an event's raft commit into the ledger
	SpanDeliver     = "crossdock.deliver"      // server: one delivery attempt (webhook request or agent sink write)
	SpanSinkWrite   = "crossdock.sink.write"   // agent: a sink connector's write of a delivered event
	SpanPartner     = "crossdock.partner"      // server: one partner API call ("crossdock.partner <Method>")
)

// Attribute keys (business keys are KeyPrefix + key name, e.g. crossdock.key.sku).
const (
	AttrEventID     = attribute.Key("crossdock.event.id")
	AttrEventType   = attribute.Key("crossdock.event.type")
	AttrAgent       = attribute.Key("crossdock.agent")
	AttrConnector   = attribute.Key("crossdock.connector")
	AttrDestination = attribute.Key("crossdock.destination")
	AttrRoute       = attribute.Key("crossdock.route")
	AttrAttempt     = attribute.Key("crossdock.attempt")
	AttrOutcome     = attribute.Key("crossdock.outcome")
	AttrMessageID   = attribute.Key("crossdock.message.id")
	AttrMessages    = attribute.Key("crossdock.messages")
	AttrEvents      = attribute.Key("crossdock.batch.events")
	AttrFirstSeq    = attribute.Key("crossdock.agent.seq.first")
	AttrLastSeq     = attribute.Key("crossdock.agent.seq.last")
	AttrAgentSeq    = attribute.Key("crossdock.agent.seq")
	AttrRaftIndex   = attribute.Key("crossdock.raft.index")
	AttrTransport   = attribute.Key("crossdock.transport")
	AttrPartner     = attribute.Key("crossdock.partner")
	AttrHTTPStatus  = attribute.Key("http.response.status_code")
	KeyPrefix       = "crossdock.key."
)

var (
	on     atomic.Bool
	tracer atomic.Pointer[tracerBox]
)

type tracerBox struct{ t trace.Tracer }

// Enabled reports whether spans are recorded. Everything else in this package is a
// no-op when it is false.
func Enabled() bool { return on.Load() }

// Tracer is Crossdock's tracer (a no-op one when tracing is off).
func Tracer() trace.Tracer {
	if b := tracer.Load(); b != nil {
		return b.t
	}
	return noopTracer
}

var noopTracer = noop.NewTracerProvider().Tracer(ScopeName)

var propagator = propagation.TraceContext{}

// Use makes tp the provider of Crossdock's spans and turns tracing on (tests use it
// with an in-memory exporter); the returned function turns it off again.
func Use(tp trace.TracerProvider) (restore func()) {
	tracer.Store(&tracerBox{t: tp.Tracer(ScopeName)})
	on.Store(true)
	return func() {
		on.Store(false)
		tracer.Store(nil)
	}
}

// Config is what Setup read from the environment.
type Config struct {
	Exporter string // "otlp" or "none"
	Protocol string // "http/protobuf" or "grpc"
}

// FromEnv reads OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL.
// Tracing is on when OTEL_TRACES_EXPORTER is otlp, or unset with an OTLP endpoint set.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{Exporter: "none", Protocol: "http/protobuf"}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return c, nil
	}
	exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch exp {
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return c, nil
		}
	case "none":
		return c, nil
	case "otlp":
	default:
		return c, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: set it to otlp (with OTEL_EXPORTER_OTLP_ENDPOINT) or none", exp)
	}
	c.Exporter = "otlp"
	proto := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		proto = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch proto {
	case "", "http/protobuf":
	case "grpc":
		c.Protocol = proto
	default:
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q is not supported: use http/protobuf (the default, port 4318) or grpc (port 4317)", proto)
	}
	return c, nil
}

// Setup turns tracing on when the OTEL_* variables ask for it (see FromEnv), exporting
// over OTLP in batches; service is the default service.name (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override it). Endpoint, headers, timeout, TLS, sampler
// (OTEL_TRACES_SAMPLER) and batching (OTEL_BSP_*) are read by the OpenTelemetry SDK.
// shutdown flushes the spans not yet exported; it is a no-op when tracing stayed off.
func Setup(ctx context.Context, service, version string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	nop := func(context.Context) error { return nil }
	if log == nil {
		log = slog.Default()
	}
	cfg, err := FromEnv(os.Getenv)
	if err != nil {
		return nop, fmt.Errorf("tracing: %w", err)
	}
	if cfg.Exporter == "none" {
		return nop, nil
	}
	var exp sdktrace.SpanExporter
	if cfg.Protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nop, fmt.Errorf("tracing: OTLP exporter (%s): %w; check OTEL_EXPORTER_OTLP_ENDPOINT", cfg.Protocol, err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", service), attribute.String("service.version", version)))
	if err == nil {
		var env *resource.Resource
		env, err = resource.New(ctx, resource.WithFromEnv()) // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		if err == nil {
			res, err = resource.Merge(res, env)
		}
	}
	if err != nil && !errors.Is(err, resource.ErrPartialResource) && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nop, fmt.Errorf("tracing: resource from OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	restore := Use(tp)
	log.Info("tracing on", "exporter", "otlp", "protocol", cfg.Protocol, "service", serviceName(res, service))
	return func(ctx context.Context) error {
		restore()
		return tp.Shutdown(ctx)
	}, nil
}

func serviceName(res *resource.Resource, def string) string {
	if v, ok := res.Set().Value("service.name"); ok {
		return v.AsString()
	}
	return def
}

// eventCarrier reads and writes an event's TraceContext as a TextMapCarrier.
type eventCarrier struct{ tc *eventv1.TraceContext }

func (c eventCarrier) Get(k string) string {
	switch k {
	case "traceparent":
		return c.tc.GetTraceparent()
	case "tracestate":
		return c.tc.GetTracestate()
	}
	return ""
}

func (c eventCarrier) Set(k, v string) {
	switch k {
	case "traceparent":
		c.tc.Traceparent = v
	case "tracestate":
		c.tc.Tracestate = v
	}
}

func (c eventCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// Remote returns the span context carried in tc (invalid when it carries none).
func Remote(tc *eventv1.TraceContext) trace.SpanContext {
	if tc.GetTraceparent() == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), eventCarrier{tc}))
}

// RemoteStrings is Remote for a traceparent and tracestate read off the wire.
func RemoteStrings(traceparent, tracestate string) trace.SpanContext {
	return Remote(&eventv1.TraceContext{Traceparent: traceparent, Tracestate: tracestate})
}

// Parent returns ctx with the span context carried in tc as its remote parent, or ctx
// as it is when tc carries none.
func Parent(ctx context.Context, tc *eventv1.TraceContext) context.Context {
	if sc := Remote(tc); sc.IsValid() {
		return trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	return ctx
}

// Carry returns the trace context of ctx's span as an event's TraceContext (nil when
// ctx has no valid span).
func Carry(ctx context.Context) *eventv1.TraceContext {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	tc := &eventv1.TraceContext{}
	propagator.Inject(ctx, eventCarrier{tc})
	return tc
}

// InjectHeader sets traceparent (and tracestate) on h from ctx's span.
func InjectHeader(ctx context.Context, h http.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// ExtractHeader returns ctx with the remote span context of an incoming request's
// traceparent header, if any.
func ExtractHeader(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// EventAttrs are the attributes naming an event: id, type and business keys.
func EventAttrs(ev *eventv1.Event, more ...attribute.KeyValue) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 2+len(ev.GetKeys())+len(more))
	attrs = append(attrs, AttrEventID.String(ev.GetId()), AttrEventType.String(ev.GetType()))
	attrs = append(attrs, KeyAttrs(ev.GetKeys())...)
	return append(attrs, more...)
}

// KeyAttrs are business keys as attributes (crossdock.key.<name>).
func KeyAttrs(keys map[string]string) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(keys))
	for k, v := range keys {
		out = append(out, attribute.String(KeyPrefix+k, v))
	}
	return out
}

// StartEvent starts a span for one event on the agent (publish or capture) and writes
// its context into the event, so every later span of the event joins its trace. The
// parent is the trace context the event already carries (its publisher's), else ctx's
// span. Call it after canonical.Stamp: the id does not depend on the trace.
func StartEvent(ctx context.Context, name string, ev *eventv1.Event, agent, connector string) trace.Span {
	ctx = Parent(ctx, ev.GetTrace())
	ctx, span := Tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(EventAttrs(ev, AttrAgent.String(agent), AttrConnector.String(connector))...))
	ev.Trace = Carry(ctx)
	return span
}

// EndAll ends spans, marking each failed with err when it is not nil.
func EndAll(spans []trace.Span, err error) {
	for _, s := range spans {
		Fail(s, err)
		s.End()
	}
}

// Fail records err on span as its error status (nothing when err is nil).
func Fail(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
