package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

type eventv1CommittedEvent = eventv1.CommittedEvent

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func readAll(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func startHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// switchPlan is a PlanSource a test can change.
type switchPlan struct {
	mu sync.Mutex
	p  *delivery.Plan
}

func (s *switchPlan) Plan() (*delivery.Plan, error) { return s.get(), nil }

func (s *switchPlan) get() *delivery.Plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func (s *switchPlan) set(p *delivery.Plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p = p
}

// waitPlan waits until e's workers run the plan of version v.
func waitPlan(t testing.TB, e *delivery.Engine, v string) {
	t.Helper()
	controlplanetest.WaitFor(t, 30*time.Second, "the engine to take plan "+v, func() bool { return delivery.ActivePlanVersion(e) == v })
}

func runEngineWith(t testing.TB, e *delivery.Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}
