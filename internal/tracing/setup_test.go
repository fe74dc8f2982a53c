package tracing

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestSetupExportsOverOTLPHTTP: with OTEL_EXPORTER_OTLP_ENDPOINT set, Setup turns
// tracing on and a span reaches a real OTLP/HTTP receiver (a loopback server decoding
// the export request) at shutdown, with OTEL_SERVICE_NAME as service.name.
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	var (
		mu   sync.Mutex
		reqs []*coltracepb.ExportTraceServiceRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %s", r.URL.Path, r.Header.Get("Content-Type"))
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("decode export request: %v", err)
		}
		mu.Lock()
		reqs = append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(nil)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "cp-test")
	shutdown, err := Setup(context.Background(), "crossdock-server", "dev", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !Enabled() {
		t.Fatal("Setup with an endpoint left tracing off")
	}
	_, span := Tracer().Start(context.Background(), SpanCommit)
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if Enabled() {
		t.Error("tracing still on after shutdown")
	}
	mu.Lock()
	defer mu.Unlock()
	var service, name string
	for _, r := range reqs {
		for _, rs := range r.GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					name = s.GetName()
				}
			}
		}
	}
	if service != "cp-test" || name != SpanCommit {
		t.Errorf("receiver got service %q span %q; want cp-test %s", service, name, SpanCommit)
	}
}

func TestSetupOffWithoutVariables(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	shutdown, err := Setup(context.Background(), "crossdock-agent", "dev", nil)
	if err != nil {
		t.Fatal(err)
	}
	if Enabled() {
		t.Error("tracing on without any OTEL_* variable")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "jaeger")
	if _, err := Setup(context.Background(), "crossdock-agent", "dev", nil); err == nil {
		t.Error("OTEL_TRACES_EXPORTER=jaeger accepted")
	}
}
