package agent_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/crossdock/crossdock/internal/tracing"
)

// BenchmarkPublishTraced is BenchmarkPublish with tracing on (every span recorded,
// then dropped): the cost of a span per event.
func BenchmarkPublishTraced(b *testing.B) {
	defer tracing.Use(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(discard{}))))()
	benchPublish(b)
}

// discard drops exported spans (memory stays flat over b.N).
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }
