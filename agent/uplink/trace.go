package uplink

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/internal/wire"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// batchSpans are a session's uplink batch spans (tracing on only): each from the send
// of a batch to the ack of its last seq. A batch carries many events of many traces,
// so its span is a root linked to the publish span of each event it carries. The
// methods of a nil *batchSpans do nothing.
type batchSpans struct {
	mu    sync.Mutex
	spans []batchSpan
	links []trace.Link // the batch being read; reused
}

type batchSpan struct {
	last uint64
	span trace.Span
}

func newBatchSpans() *batchSpans {
	if !tracing.Enabled() {
		return nil
	}
	return &batchSpans{}
}

// note records the trace of an outbox entry being added to the batch.
func (b *batchSpans) note(rec []byte) {
	h, ok := wire.ReadEventHead(rec)
	if !ok || len(h.Traceparent) == 0 {
		return
	}
	if sc := tracing.RemoteStrings(string(h.Traceparent), string(h.Tracestate)); sc.IsValid() {
		b.links = append(b.links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{tracing.AttrEventID.String(string(h.ID))}})
	}
}

// start starts the span of the batch just read (first to last, n events).
func (b *batchSpans) start(first, last uint64, n int, transport string) {
	if b == nil {
		return
	}
	_, span := tracing.Tracer().Start(context.Background(), tracing.SpanUplinkBatch,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(b.links...),
		trace.WithAttributes(tracing.AttrFirstSeq.Int64(int64(first)), tracing.AttrLastSeq.Int64(int64(last)),
			tracing.AttrEvents.Int(n), tracing.AttrTransport.String(transport)))
	b.links = b.links[:0]
	b.mu.Lock()
	b.spans = append(b.spans, batchSpan{last: last, span: span})
	b.mu.Unlock()
}

// acked ends the spans of the batches the control plane committed.
func (b *batchSpans) acked(ack *uplinkv1.Ack) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := 0
	for ; i < len(b.spans) && b.spans[i].last <= ack.GetCommittedSeq(); i++ {
		b.spans[i].span.End()
	}
	b.spans = b.spans[i:]
}

// end ends the spans still waiting for an ack, failed with err (the session ended).
func (b *batchSpans) end(err error) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.spans {
		tracing.Fail(s.span, err)
		s.span.End()
	}
	b.spans = nil
}
