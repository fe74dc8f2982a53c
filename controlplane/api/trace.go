package api

import (
	"context"
	"errors"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/internal/wire"
)

// commitSpans starts, with tracing on, one span per traced event of a batch being
// proposed: a child of the event's publish span on the agent, ended when raft has
// committed the batch (endCommitSpans). nil when tracing is off or no event is traced.
func commitSpans(agentID string, in *ingest) []trace.Span {
	var spans []trace.Span
	start := func(id, typ, traceparent, tracestate string, seq uint64) {
		sc := tracing.RemoteStrings(traceparent, tracestate)
		if !sc.IsValid() {
			return
		}
		_, span := tracing.Tracer().Start(trace.ContextWithRemoteSpanContext(context.Background(), sc), tracing.SpanCommit,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(tracing.AttrEventID.String(id), tracing.AttrEventType.String(typ),
				tracing.AttrAgent.String(agentID), tracing.AttrAgentSeq.Int64(int64(seq))))
		spans = append(spans, span)
	}
	if in.cmd != nil {
		for _, ae := range in.cmd.GetEvents() {
			ev := ae.GetEvent()
			if tc := ev.GetTrace(); tc.GetTraceparent() != "" {
				start(ev.GetId(), ev.GetType(), tc.GetTraceparent(), tc.GetTracestate(), ae.GetAgentSeq())
			}
		}
		return spans
	}
	// The payload holds the events as the agent sent them: read each in place.
	p := in.payload
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, p[n:])
		if m < 0 {
			break
		}
		field := p[n : n+m]
		p = p[n+m:]
		if num != wire.IngestBatchEvents || typ != protowire.BytesType {
			continue
		}
		v, _ := protowire.ConsumeBytes(field)
		seq, raw, ok := wire.OutboxEvent(v)
		if !ok {
			continue
		}
		if h, ok := wire.ReadEventHead(raw); ok && len(h.Traceparent) > 0 {
			start(string(h.ID), string(h.Type), string(h.Traceparent), string(h.Tracestate), seq)
		}
	}
	return spans
}

// endCommitSpans ends the spans of a proposal once raft answered.
func endCommitSpans(spans []trace.Span, f raft.ApplyFuture, n int, err error) {
	if err == nil && f != nil {
		for _, s := range spans {
			s.SetAttributes(tracing.AttrRaftIndex.Int64(int64(f.Index())), attribute.Int(string(tracing.AttrEvents), n))
		}
	}
	if err == nil {
		tracing.EndAll(spans, nil)
		return
	}
	tracing.EndAll(spans, errors.New("not committed: "+err.Error()))
}
