package delivery_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// logLines decodes the JSON log lines written to l.
func logLines(t *testing.T, l *testutil.LogBuffer) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestDeadReceiverLogsBounded: a receiver that fails 1,000 requests (200 messages x 5
// attempts) gives a bounded number of failure and dead-letter lines, rate-limited per
// destination, each naming the destination, the event and its business keys, and the
// lines after a quiet period count the ones suppressed.
func TestDeadReceiverLogsBounded(t *testing.T) {
	const (
		messages = 200
		attempts = 5
		burst    = 5
		// Short enough that the failures span several windows however fast the
		// machine: a suppressed count is reported by the first line of a later window,
		// and without -race all 1,000 failures took under 240 ms, inside one window
		// of 200 ms, so no line reported one.
		every = 40 * time.Millisecond
	)
	srv := controlplanetest.TestServer(t, nil)
	var requests atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "partner down", http.StatusInternalServerError)
	}))
	t.Cleanup(recv.Close)
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "dead", Kind: delivery.KindWebhook, URL: recv.URL, Secret: testSecret, Concurrency: 16,
			Policy: routing.Policy{MaxAttempts: attempts, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
				FailureThreshold: 1 << 20, Cooldown: time.Millisecond}}},
		Routes: []delivery.Route{stockRoute("stock", "dead")},
	}
	var buf testutil.LogBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: log, Poll: 50 * time.Millisecond,
		AddressPolicy: allowLoopback(t), LogBurst: burst, LogEvery: every})
	start := time.Now()
	runEngineWith(t, e)
	src := newSource(t)
	var lv []level
	for i := range messages {
		lv = append(lv, level{fmt.Sprintf("SKU-%03d", i), "1"})
	}
	src.commit(srv.Store(), lv...)
	waitCursor(t, srv.Store().Ledger(), "dead", 2*time.Minute)
	// One more message once a window has passed: its failures are logged in a later
	// window, whose first line counts what the earlier ones suppressed (the 1,000
	// failures may all fall within one window on a fast machine: 5 lines, no count).
	quiet := time.Now()
	testutil.WaitFor(t, time.Second, "a log window to pass", func() bool { return time.Since(quiet) > every })
	src.commit(srv.Store(), level{"SKU-LAST", "1"})
	waitCursor(t, srv.Store().Ledger(), "dead", 2*time.Minute)
	const total = (messages + 1) * attempts
	elapsed := time.Since(start)
	if n := requests.Load(); n != total {
		t.Fatalf("receiver failed %d requests, want %d", n, total)
	}
	windows := int(math.Ceil(float64(elapsed)/float64(every))) + 1
	var failures, dead, suppressed int
	for _, l := range logLines(t, &buf) {
		switch l["msg"] {
		case "delivery: attempt failed":
			failures++
			if l["destination"] != "dead" || l["event_type"] != "inventory.level" || l["key.sku"] == nil || l["event_id"] == nil || l["status"] != float64(500) {
				t.Errorf("failure line without destination, event or keys: %v", l)
			}
			if n, ok := l["suppressed"].(float64); ok {
				suppressed += int(n)
			}
		case "delivery: dead-lettered; `crossdock dlq` lists and retries it":
			dead++
			if l["key.sku"] == nil || l["reason"] == nil {
				t.Errorf("dead-letter line without keys or reason: %v", l)
			}
		}
	}
	t.Logf("%d failures in %s: %d failure lines (%d counted as suppressed), %d dead-letter lines, limit %d per kind",
		total, elapsed.Round(time.Millisecond), failures, suppressed, dead, burst*windows)
	if failures == 0 || failures > burst*windows {
		t.Errorf("%d failure lines for %d failures in %s; want 1..%d (%d per %s)", failures, total, elapsed, burst*windows, burst, every)
	}
	if dead == 0 || dead > burst*windows {
		t.Errorf("%d dead-letter lines for %d dead letters; want 1..%d", dead, messages+1, burst*windows)
	}
	if suppressed == 0 && failures < total {
		t.Errorf("no failure line counts the %d suppressed ones", total-failures)
	}
	if failures+suppressed > total {
		t.Errorf("%d lines + %d suppressed > %d failures", failures, suppressed, total)
	}
}

// TestBreakerChangesLogged: the breaker opening after failures and closing when the
// receiver answers again are each logged, with the destination.
func TestBreakerChangesLogged(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	var requests atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) <= 3 {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "flaky", Kind: delivery.KindWebhook, URL: recv.URL, Secret: testSecret,
			Policy: routing.Policy{MaxAttempts: 10, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
				FailureThreshold: 2, Cooldown: 100 * time.Millisecond}}},
		Routes: []delivery.Route{stockRoute("stock", "flaky")},
	}
	var buf testutil.LogBuffer
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: slog.New(slog.NewJSONHandler(&buf, nil)),
		Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	runEngineWith(t, e)
	newSource(t).commit(srv.Store(), level{"A", "1"})
	waitCursor(t, srv.Store().Ledger(), "flaky", time.Minute)
	var open, closed bool
	for _, l := range logLines(t, &buf) {
		msg, _ := l["msg"].(string)
		switch {
		case msg == "delivery: circuit breaker open; nothing is sent to the destination until the cooldown ends":
			open = l["destination"] == "flaky" && l["err"] != nil
		case msg == "delivery: circuit breaker closed; the destination answers again":
			closed = open && l["destination"] == "flaky"
		}
	}
	if !open || !closed {
		t.Errorf("breaker open logged %v, closed after it %v; log:\n%s", open, closed, buf.String())
	}
}
