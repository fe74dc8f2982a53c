package partner_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/tracing"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// TestSubmitOrderTraced: a partner's SubmitOrder sent with a traceparent is one trace
// with what follows: the partner API span is the caller's child, and the order event
// committed carries that span's context (so its commit, its delivery to the ERP's agent
// and the sink write join the partner's trace). A resubmission under another trace is
// still a duplicate, not a conflict: the trace is not part of the order.
func TestSubmitOrderTraced(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(tracing.Use(tp))
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a := e.client(n, e.key("shopa", 0))

	submit := func() (*partnerv1.SubmitOrderResponse, string) {
		t.Helper()
		ctx, span := tp.Tracer("partner-client").Start(context.Background(), "shop.checkout")
		defer span.End()
		sc := span.SpanContext()
		req := connect.NewRequest(order("PO-T1"))
		req.Header().Set("traceparent", fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID()))
		res, err := a.SubmitOrder(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg, sc.TraceID().String()
	}
	first, traceID := submit()
	evs := orderEvents(t, n, "order", canonical.OrderEventID("shopa", "PO-T1"))
	if len(evs) != 1 {
		t.Fatalf("ledger holds %d order events, want 1", len(evs))
	}
	tc := evs[0].GetTrace()
	if tc == nil || len(tc.GetTraceparent()) < 55 || tc.GetTraceparent()[3:35] != traceID {
		t.Fatalf("the committed order's trace %v, want the caller's trace %s", tc, traceID)
	}
	var partnerSpan bool
	for _, sp := range exp.GetSpans() {
		if sp.Name == tracing.SpanPartner+" SubmitOrder" && sp.SpanContext.TraceID().String() == traceID &&
			tc.GetTraceparent()[36:52] == sp.SpanContext.SpanID().String() {
			partnerSpan = true
		}
	}
	if !partnerSpan {
		t.Fatalf("no %s SubmitOrder span in trace %s whose id the order carries (%s)", tracing.SpanPartner, traceID, tc.GetTraceparent())
	}
	again, otherTrace := submit()
	if otherTrace == traceID || !again.GetDuplicate() || again.GetOrderId() != first.GetOrderId() || again.GetSeq() != first.GetSeq() {
		t.Fatalf("resubmission under another trace: %v, want the same order as a duplicate", again)
	}
}
