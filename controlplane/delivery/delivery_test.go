package delivery_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// 10,000 events over 500 SKUs into a receiver that fails at random (5xx, hangs past the
// client timeout, 429 with Retry-After) and refuses some messages for good: every SKU
// ends at the source's quantity, no key is ever delivered out of order, and exactly the
// refused messages are dead letters, with the receiver's reason.
func TestRandomFailuresConverge(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	const events, skus = 10000, 500
	rng := rand.New(rand.NewPCG(1, 2))
	// Poison: the receiver answers 422 for these quantities; never a SKU's last update.
	m, url := market(t, samplemarket.Config{
		// Hangs outlast the client timeout; the timeout leaves a loaded machine (race
		// detector, other packages' tests) ample time to read a 429 answered at once,
		// so a 429 the client missed cannot look like Retry-After ignored.
		FailRate: 0.05, HangRate: 0.01, Hang: 1200 * time.Millisecond, ThrottleRate: 0.02, Seed: 7,
		Reject: func(msg samplemarket.Message) (int, string) {
			if strings.HasPrefix(msg.QuantityString(), "-") {
				return http.StatusUnprocessableEntity, "negative quantity " + msg.QuantityString()
			}
			return 0, ""
		},
	})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret, Timeout: 800 * time.Millisecond,
			Policy: routing.Policy{MaxAttempts: 25, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, FailureThreshold: 40, Cooldown: 50 * time.Millisecond}, Concurrency: 16}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	src := newSource(t)
	runEngine(t, srv.Store(), plan)

	poison := map[string]bool{} // sku/quantity
	lastOf := map[string]int{}
	var all []level
	for i := range events {
		sku := fmt.Sprintf("SKU-%03d", rng.IntN(skus))
		all = append(all, level{sku: sku, qty: fmt.Sprint(i)})
		lastOf[sku] = i
	}
	for i := range all {
		if i%500 == 250 && lastOf[all[i].sku] != i {
			all[i].qty = "-" + all[i].qty
			poison[all[i].sku+"/"+all[i].qty] = true
		}
	}
	for i := 0; i < len(all); i += 500 {
		src.commit(srv.Store(), all[i:i+500]...)
	}
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 3*time.Minute)

	got := m.Quantities()
	for sku, want := range src.latest {
		if got[sku] != want {
			t.Errorf("%s: receiver has %q, source %q", sku, got[sku], want)
		}
	}
	// Order per key, in arrival order (every request, including refused and hung ones).
	lastSeq := map[string]uint64{}
	for _, p := range received(t, m.Requests()) {
		if p.Seq < lastSeq[p.SKU] {
			t.Fatalf("%s: seq %d arrived after seq %d", p.SKU, p.Seq, lastSeq[p.SKU])
		}
		lastSeq[p.SKU] = p.Seq
	}
	for _, r := range m.Requests() {
		if len(r.Messages) == 1 {
			if p := received(t, []samplemarket.Request{r})[0]; r.ID != p.ID {
				t.Fatalf("webhook-id %q for event %q: the idempotency key must be the event id", r.ID, p.ID)
			}
		}
	}
	dls, err := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != len(poison) {
		t.Errorf("%d dead letters, want the %d refused messages", len(dls), len(poison))
	}
	for _, d := range dls {
		var p stockPayload
		if err := jsonUnmarshal(d.GetPayload(), &p); err != nil {
			t.Fatal(err)
		}
		if !poison[p.SKU+"/"+p.Quantity] {
			t.Errorf("dead letter %s (seq %d, %s) was not refused by the receiver: %s", d.GetId(), d.GetSeq(), p.Quantity, d.GetError())
		}
		if !strings.Contains(d.GetError(), "HTTP 422") || !strings.Contains(d.GetError(), "negative quantity "+p.Quantity) {
			t.Errorf("dead letter %s error %q lacks the receiver's status and reason", d.GetId(), d.GetError())
		}
		if n := len(d.GetAttempts()); n == 0 || d.GetAttempts()[n-1].GetStatus() != 422 {
			t.Errorf("dead letter %s attempts %v: the last should be the 422", d.GetId(), d.GetAttempts())
		}
	}
	// Retry-After (1 s on every 429 here) is honoured: the same message is not sent
	// again sooner.
	reqs := m.Requests()
	for i, r := range reqs {
		if r.Status != http.StatusTooManyRequests {
			continue
		}
		for _, n := range reqs[i+1:] {
			if n.ID == r.ID {
				if gap := n.At.Sub(r.At); gap < time.Second {
					t.Fatalf("message %s sent again %s after a 429 with Retry-After: 1", r.ID, gap)
				}
				break
			}
		}
	}
	st := m.Stats()
	t.Logf("receiver: %d requests, by status %v", st.Requests, st.ByStatus)
	if st.ByStatus[http.StatusTooManyRequests] == 0 || st.ByStatus[http.StatusGatewayTimeout] == 0 {
		t.Errorf("the fault injection did not happen: %v", st.ByStatus)
	}
	c, _, _ := l.DeliveryCursor("shop")
	if c.GetDeadLettered() != uint64(len(poison)) || c.GetDelivered()+c.GetDeadLettered() != events {
		t.Errorf("cursor counters delivered %d dead %d, want %d and %d", c.GetDelivered(), c.GetDeadLettered(), events-len(poison), len(poison))
	}
}

// 1,000 updates of 10 SKUs into a 2 requests/s destination: coalescing sends only the
// newest queued update of each SKU.
func TestCoalescingBurst(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret,
			Policy: routing.Policy{RatePerSecond: 2, Burst: 2, Coalesce: true, CoalesceBy: []string{"sku"}}}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	for b := range 10 {
		var lv []level
		for i := range 100 {
			n := b*100 + i
			lv = append(lv, level{sku: fmt.Sprintf("SKU-%d", n%10), qty: fmt.Sprint(n)})
		}
		src.commit(srv.Store(), lv...)
	}
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", time.Minute)
	got := m.Quantities()
	for sku, want := range src.latest {
		if got[sku] != want {
			t.Errorf("%s: receiver has %q, source %q", sku, got[sku], want)
		}
	}
	n := m.Stats().Requests
	t.Logf("%d requests for 1000 updates", n)
	if n > 40 {
		t.Errorf("%d requests for 1000 updates of 10 SKUs: coalescing did not happen", n)
	}
	c, _, _ := l.DeliveryCursor("shop")
	if c.GetCoalesced()+c.GetDelivered() != 1000 || c.GetDelivered() != uint64(n) {
		t.Errorf("cursor counters: delivered %d coalesced %d, want %d delivered and the rest coalesced", c.GetDelivered(), c.GetCoalesced(), n)
	}
}

// The token bucket holds, measured on the receiver's clock, and every request carries a
// Standard Webhooks signature that an independent implementation accepts.
func TestRateLimitAndSignature(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	type hit struct {
		at  time.Time
		err error
	}
	hits := make(chan hit, 1000)
	m, err := samplemarket.New(samplemarket.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := readAll(r)
		hits <- hit{at: time.Now(), err: verifyStandardWebhook(testSecret, r.Header, body, time.Now())}
		r.Body = nopCloser(body)
		m.ServeHTTP(w, r)
	})
	url := startHTTP(t, check)
	const rate, burst, n = 5.0, 5, 30
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret,
			Policy: routing.Policy{RatePerSecond: rate, Burst: burst}}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	var lv []level
	for i := range n {
		lv = append(lv, level{sku: fmt.Sprintf("SKU-%d", i), qty: "1"})
	}
	src.commit(srv.Store(), lv...)
	waitCursor(t, srv.Store().Ledger(), "shop", time.Minute)
	close(hits)
	var times []time.Time
	for h := range hits {
		if h.err != nil {
			t.Fatalf("signature check: %v", h.err)
		}
		times = append(times, h.at)
	}
	if len(times) != n {
		t.Fatalf("%d requests, want %d", len(times), n)
	}
	// Any k consecutive requests span at least (k - burst) / rate seconds. The receiver's
	// clock sees network jitter too (the burst opens new connections, slow under the
	// race detector on two shared cores): allow 100 ms, half a token at this rate.
	for i := range times {
		for j := i + burst; j < len(times); j++ {
			minSpan := time.Duration(float64(j-i+1-burst) / rate * float64(time.Second))
			if span := times[j].Sub(times[i]); span+100*time.Millisecond < minSpan {
				t.Fatalf("requests %d..%d arrived within %s; the bucket allows no less than %s", i, j, span, minSpan)
			}
		}
	}
	total := times[len(times)-1].Sub(times[0])
	t.Logf("%d requests in %s", n, total)
}

// A mapping that fails dead-letters the message at once, with the mapping's error; a
// retry after the mapping is fixed delivers it and marks the dead letter delivered.
func TestMappingErrorDeadLetterAndRetry(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	good := stockRoute("stock", "shop")
	broken := delivery.Route{Name: "stock", Destinations: []string{"shop"}, Evaluate: func(ce *eventv1CommittedEvent) (bool, []byte, error) {
		if ce.GetEvent().GetKeys()["sku"] == "BAD" {
			return false, nil, fmt.Errorf("no such key: quantity")
		}
		return good.Evaluate(ce)
	}}
	plans := &switchPlan{p: &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret}},
		Routes:       []delivery.Route{broken},
	}}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: plans, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	runEngineWith(t, e)
	src := newSource(t)
	src.commit(srv.Store(), level{"A", "1"}, level{"BAD", "2"}, level{"B", "3"}, level{"BAD", "4"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop", ErrorContains: "no such key"})
	if len(dls) != 2 || dls[0].GetSeq() != 2 || dls[1].GetSeq() != 4 {
		t.Fatalf("dead letters %v, want seqs 2 and 4", dls)
	}
	if !strings.Contains(dls[0].GetError(), "route stock: mapping failed: no such key: quantity") {
		t.Errorf("error %q does not carry the mapping error", dls[0].GetError())
	}
	if got := m.Quantities(); got["A"] != "1" || got["B"] != "3" || got["BAD"] != "" {
		t.Fatalf("receiver quantities %v", got)
	}
	// Fix the mapping, then retry every open dead letter of the destination.
	plans.set(&delivery.Plan{Version: "2", Destinations: plans.get().Destinations, Routes: []delivery.Route{good}})
	waitPlan(t, e, "2")
	ctx := t.Context()
	if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{
		Destination: "shop", State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "retried dead letters delivered", func() bool {
		open, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop", States: []storev1.DeadLetterState{
			storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN, storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}})
		return len(open) == 0
	})
	if got := m.Quantities()["BAD"]; got != "4" {
		t.Fatalf("BAD after retry = %q, want 4", got)
	}
	// The retry carried the original idempotency key.
	for _, r := range m.Requests() {
		if p := received(t, []samplemarket.Request{r}); len(p) == 1 && p[0].SKU == "BAD" && r.ID != p[0].ID {
			t.Fatalf("retry sent with webhook-id %q, want the event id %q", r.ID, p[0].ID)
		}
	}
}

// A replay re-sends the committed events of a route from a seq, filtered by key, and
// its progress is committed until done.
func TestReplay(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	var lv []level
	for i := range 30 {
		lv = append(lv, level{sku: fmt.Sprintf("S%d", i%3), qty: fmt.Sprint(i)})
	}
	src.commit(srv.Store(), lv...)
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)
	before := len(received(t, m.Requests()))
	if _, err := srv.Store().Propose(t.Context(), storev1.CommandType_COMMAND_TYPE_START_REPLAY, &storev1.StartReplay{
		Id: "rp-1", Route: "stock", Destination: "shop", FromSeq: 11, ToSeq: l.LastSeq(), Keys: map[string]string{"sku": "S1"},
	}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "replay done", func() bool {
		r, ok, _ := l.Replay("rp-1")
		return ok && r.GetDone()
	})
	again := received(t, m.Requests())[before:]
	// Seqs 11..30 with sku S1: quantities 10..29 where i%3 == 1: 10, 13, ..., 28.
	var want []uint64
	for i := 10; i < 30; i++ {
		if i%3 == 1 {
			want = append(want, uint64(i+1))
		}
	}
	if len(again) != len(want) {
		t.Fatalf("replay sent %d messages, want %d", len(again), len(want))
	}
	for i, p := range again {
		if p.Seq != want[i] || p.SKU != "S1" {
			t.Fatalf("replay message %d: seq %d sku %s, want seq %d of S1", i, p.Seq, p.SKU, want[i])
		}
	}
	r, _, _ := l.Replay("rp-1")
	if r.GetSent() != uint64(len(want)) {
		t.Errorf("replay record says %d sent, want %d", r.GetSent(), len(want))
	}
}

// A destination that always fails: the circuit opens (and is seen open in status), and
// each message is dead-lettered after exactly MaxAttempts attempts, none lost to the
// open circuit.
func TestGiveUpAfterMaxAttemptsWithBreaker(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{FailRate: 1})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "down", Kind: delivery.KindWebhook, URL: url, Secret: testSecret,
			Policy: routing.Policy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, FailureThreshold: 2, Cooldown: 150 * time.Millisecond}}},
		Routes: []delivery.Route{stockRoute("stock", "down")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	runEngineWith(t, e)
	src := newSource(t)
	src.commit(srv.Store(), level{"A", "1"}, level{"B", "2"}, level{"C", "3"}, level{"D", "4"}, level{"E", "5"})
	controlplanetest.WaitFor(t, 30*time.Second, "the breaker to open", func() bool {
		st, err := e.Status()
		return err == nil && len(st) == 1 && st[0].Breaker == delivery.BreakerOpen
	})
	l := srv.Store().Ledger()
	waitCursor(t, l, "down", time.Minute)
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "down"})
	if len(dls) != 5 {
		t.Fatalf("%d dead letters, want 5", len(dls))
	}
	for _, d := range dls {
		if len(d.GetAttempts()) != 3 || !strings.HasPrefix(d.GetError(), "gave up after 3 attempts: HTTP 5") {
			t.Errorf("dead letter seq %d: %d attempts, error %q", d.GetSeq(), len(d.GetAttempts()), d.GetError())
		}
	}
	if n := m.Stats().Requests; n != 15 {
		t.Errorf("receiver got %d requests, want 5 messages x 3 attempts", n)
	}
}

// A key that keeps failing holds the cursor. Messages of other keys go on, but only up
// to the window past the cursor, since a new leader would send all of them again; once
// the key gets through, the rest follows.
func TestWindowBoundsWorkAboveAStuckKey(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, err := samplemarket.New(samplemarket.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	var stuck atomic.Bool
	stuck.Store(true)
	var delivered, refused atomic.Int64
	url := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := readAll(r)
		if stuck.Load() && strings.Contains(string(body), `"sku":"STUCK"`) {
			refused.Add(1)
			http.Error(w, "injected: try later", http.StatusServiceUnavailable)
			return
		}
		delivered.Add(1)
		r.Body = nopCloser(body)
		m.ServeHTTP(w, r)
	}))
	const window = 50
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret,
			Policy: routing.Policy{MaxAttempts: 1000, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, FailureThreshold: 1000}, Window: window}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	lv := []level{{"STUCK", "1"}}
	for i := range 300 {
		lv = append(lv, level{sku: fmt.Sprintf("S%d", i), qty: "1"})
	}
	src.commit(srv.Store(), lv...)
	// The stuck message counts in the window too.
	controlplanetest.WaitFor(t, 30*time.Second, "the window to fill", func() bool { return delivered.Load() == window-1 })
	// It stays there while the key is stuck: the next messages are not even read.
	// Check across ten more retries of the stuck message.
	tries := refused.Load()
	controlplanetest.WaitFor(t, 30*time.Second, "ten more retries of the stuck key", func() bool { return refused.Load() >= tries+10 })
	if got := delivered.Load(); got != window-1 {
		t.Fatalf("%d messages delivered above the stuck key, want the window less the stuck one (%d)", got, window-1)
	}
	if c, _, _ := srv.Store().Ledger().DeliveryCursor("shop"); c.GetSeq() != 1 {
		t.Fatalf("cursor moved to %d past the stuck seq 1", c.GetSeq())
	}
	stuck.Store(false)
	waitCursor(t, srv.Store().Ledger(), "shop", 30*time.Second)
	if got := m.Quantities(); len(got) != 301 {
		t.Fatalf("receiver has %d SKUs, want 301", len(got))
	}
}
