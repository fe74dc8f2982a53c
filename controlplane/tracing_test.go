package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/internal/tracing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// TestTraceAgentPublishToWebhook follows one event from an ERP-side span through the
// agent's publish, the uplink batch, the raft commit and two webhook attempts (a 503,
// then the partner's 200), all recorded by an in-memory exporter: the spans must form
// one trace with the right parent of each, and the traceparent the receiver saw must
// name the attempt's span.
func TestTraceAgentPublishToWebhook(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(tracing.Use(tp))

	s := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	var (
		mu       sync.Mutex
		received []string // traceparent of each request, in order
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		received = append(received, r.Header.Get("traceparent"))
		n := len(received)
		mu.Unlock()
		if n == 1 { // the first attempt fails transiently: a retry, a second attempt span
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	applyShopRoute(t, s, recv.URL)
	a := startAgent(t, s, "traced")

	// The ERP-side capture: the caller's span is the root of the event's trace.
	ctx, capture := tp.Tracer("erp").Start(context.Background(), "erp.capture")
	ev := level("SKU-T1", 1)
	ev.Type = "inventory.level"
	ev.Keys = map[string]string{"sku": "SKU-T1"}
	if _, err := a.Publish(ctx, "", []*eventv1.Event{ev}); err != nil {
		t.Fatal(err)
	}
	capture.End()
	traceID := capture.SpanContext().TraceID()

	byName := func() map[string][]tracetest.SpanStub {
		out := map[string][]tracetest.SpanStub{}
		for _, sp := range exp.GetSpans() {
			out[sp.Name] = append(out[sp.Name], sp)
		}
		return out
	}
	var spans map[string][]tracetest.SpanStub
	testutil.WaitForDetail(t, 60*time.Second, 50*time.Millisecond, "spans of publish, uplink batch, commit and two delivery attempts", func() (bool, string) {
		spans = byName()
		mu.Lock()
		n := len(received)
		mu.Unlock()
		detail := fmt.Sprintf("requests=%d publish=%d batch=%d commit=%d deliver=%d", n,
			len(spans[tracing.SpanPublish]), len(spans[tracing.SpanUplinkBatch]), len(spans[tracing.SpanCommit]), len(spans[tracing.SpanDeliver]))
		return n >= 2 && len(spans[tracing.SpanPublish]) == 1 && len(spans[tracing.SpanUplinkBatch]) >= 1 &&
			len(spans[tracing.SpanCommit]) == 1 && len(spans[tracing.SpanDeliver]) >= 2, detail
	})

	pub := spans[tracing.SpanPublish][0]
	if pub.SpanContext.TraceID() != traceID || pub.Parent.SpanID() != capture.SpanContext().SpanID() {
		t.Errorf("publish span: trace %s parent %s; want trace %s parent %s (the caller's span)", pub.SpanContext.TraceID(), pub.Parent.SpanID(), traceID, capture.SpanContext().SpanID())
	}
	wantAttr(t, pub, tracing.AttrEventID, ev.GetId())
	wantAttr(t, pub, attribute.Key(tracing.KeyPrefix+"sku"), "SKU-T1")
	wantAttr(t, pub, tracing.AttrAgent, a.ID())

	// The uplink batch is a root of its own (it carries events of many traces), linked
	// to the publish span of each event it carried.
	linked := false
	for _, b := range spans[tracing.SpanUplinkBatch] {
		for _, l := range b.Links {
			linked = linked || l.SpanContext.SpanID() == pub.SpanContext.SpanID()
		}
	}
	if !linked {
		t.Errorf("no %s span links to the publish span %s", tracing.SpanUplinkBatch, pub.SpanContext.SpanID())
	}

	commit := spans[tracing.SpanCommit][0]
	if commit.SpanContext.TraceID() != traceID || commit.Parent.SpanID() != pub.SpanContext.SpanID() {
		t.Errorf("commit span: trace %s parent %s; want a child of the publish span %s", commit.SpanContext.TraceID(), commit.Parent.SpanID(), pub.SpanContext.SpanID())
	}
	if v := attr(commit, tracing.AttrRaftIndex); v == "" || v == "0" {
		t.Errorf("commit span has no raft index (%q)", v)
	}

	attempts := spans[tracing.SpanDeliver]
	mu.Lock()
	seen := append([]string(nil), received...)
	mu.Unlock()
	for i, d := range attempts[:2] {
		if d.SpanContext.TraceID() != traceID || d.Parent.SpanID() != pub.SpanContext.SpanID() {
			t.Errorf("delivery attempt %d: trace %s parent %s; want a child of the publish span %s", i+1, d.SpanContext.TraceID(), d.Parent.SpanID(), pub.SpanContext.SpanID())
		}
		wantAttr(t, d, tracing.AttrDestination, "shop")
		wantAttr(t, d, tracing.AttrAttempt, fmt.Sprint(i+1))
		wantAttr(t, d, attribute.Key(tracing.KeyPrefix+"sku"), "SKU-T1")
		want := fmt.Sprintf("00-%s-%s-01", traceID, d.SpanContext.SpanID())
		if seen[i] != want {
			t.Errorf("request %d carried traceparent %q; want %q (its attempt's span)", i+1, seen[i], want)
		}
	}
	wantAttr(t, attempts[0], tracing.AttrHTTPStatus, "503")
	wantAttr(t, attempts[0], tracing.AttrOutcome, "retry")
	if attempts[0].Status.Code != codes.Error {
		t.Errorf("the 503 attempt's status is %v, want Error", attempts[0].Status.Code)
	}
	wantAttr(t, attempts[1], tracing.AttrHTTPStatus, "200")
	wantAttr(t, attempts[1], tracing.AttrOutcome, "ok")
}

// applyShopRoute defines the webhook destination shop at url and a route of inventory
// levels to it.
func applyShopRoute(t *testing.T, s *controlplanetest.Server, url string) {
	t.Helper()
	cc, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	docs := fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.on_hand}
`, url)
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(context.Background(),
		connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		t.Fatalf("apply the destination and route: %v", err)
	}
}

func attr(s tracetest.SpanStub, k attribute.Key) string {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value.Emit()
		}
	}
	return ""
}

func wantAttr(t *testing.T, s tracetest.SpanStub, k attribute.Key, want string) {
	t.Helper()
	if got := attr(s, k); got != want {
		t.Errorf("span %s: %s = %q, want %q", s.Name, k, got, want)
	}
}
