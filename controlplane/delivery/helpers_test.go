package delivery_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// testSecret is a Standard Webhooks secret (24 random-looking bytes).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// stockPayload is what the test routes send: the receiver reads sku and quantity; seq
// and id let the test check order and idempotency keys.
type stockPayload struct {
	SKU      string `json:"sku"`
	Quantity string `json:"quantity"`
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
}

// stockRoute maps inventory levels to stockPayload.
func stockRoute(name string, dests ...string) delivery.Route {
	return delivery.Route{Name: name, Destinations: dests, Evaluate: func(ce *eventv1.CommittedEvent) (bool, []byte, error) {
		lvl := ce.GetEvent().GetInventoryLevel()
		if lvl == nil {
			return false, nil, nil
		}
		b, err := json.Marshal(stockPayload{SKU: lvl.GetSku(), Quantity: lvl.GetAvailable(), Seq: ce.GetSeq(), ID: ce.GetEvent().GetId()})
		return true, b, err
	}}
}

// source plays the ERP: it commits inventory levels through raft and remembers the
// newest quantity per SKU.
type source struct {
	t        testing.TB
	agentSeq uint64
	mu       sync.Mutex
	latest   map[string]string
	ids      map[string]bool
	n        int
}

func newSource(t testing.TB) *source {
	return &source{t: t, latest: map[string]string{}, ids: map[string]bool{}}
}

type level struct{ sku, qty string }

// commit proposes one IngestBatch to st (the leader's store).
func (s *source) commit(st *store.Store, levels ...level) {
	s.t.Helper()
	b := &storev1.IngestBatch{AgentId: "erp-agent"}
	s.mu.Lock()
	for _, l := range levels {
		s.agentSeq++
		s.n++
		id := fmt.Sprintf("ev_test_%07d", s.n)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: s.agentSeq, Event: &eventv1.Event{
			Id: id, Type: "inventory.level", Keys: map[string]string{"sku": l.sku},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: l.sku, Location: "WH1", OnHand: l.qty, Available: l.qty}},
		}})
		s.latest[l.sku] = l.qty
		s.ids[id] = true
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := st.Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	if err != nil {
		s.t.Fatalf("ingest: %v", err)
	}
	if r, ok := res.(*storev1.IngestResult); !ok || int(r.GetCommitted()) != len(levels) {
		s.t.Fatalf("ingest result %v, want %d committed", res, len(levels))
	}
}

// market starts a sample marketplace on a real loopback HTTP server.
func market(t testing.TB, cfg samplemarket.Config) (*samplemarket.Market, string) {
	t.Helper()
	cfg.Secret = testSecret
	m, err := samplemarket.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// runEngine runs a delivery engine on st until the test ends.
func runEngine(t testing.TB, st delivery.Store, plan *delivery.Plan) *delivery.Engine {
	t.Helper()
	e := delivery.New(delivery.Config{Store: st, Plans: delivery.StaticPlan{P: plan}, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// waitCursor waits until dest's committed cursor passes every committed event.
func waitCursor(t testing.TB, l *ledger.Ledger, dest string, timeout time.Duration) {
	t.Helper()
	controlplanetest.WaitFor(t, timeout, "cursor of "+dest+" to reach the end of the ledger", func() bool {
		c, ok, err := l.DeliveryCursor(dest)
		return err == nil && ok && c.GetSeq() == l.LastSeq()+1
	})
}

// verifyStandardWebhook is an independent implementation of the Standard Webhooks
// check (https://www.standardwebhooks.com/): it does not share code with the sender.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp")
	if id == "" || ts == "" {
		return fmt.Errorf("missing webhook-id or webhook-timestamp")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("timestamp %q outside tolerance", ts)
	}
	signed := []byte(id + "." + ts + "." + string(body))
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	expected := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Split(h.Get("Webhook-Signature"), " ") {
		if hmac.Equal([]byte(sig), []byte(expected)) {
			return nil
		}
	}
	return fmt.Errorf("no matching signature in %q", h.Get("Webhook-Signature"))
}

// received decodes every message of the requests a market recorded.
func received(t testing.TB, reqs []samplemarket.Request) []stockPayload {
	t.Helper()
	var out []stockPayload
	for _, r := range reqs {
		for _, m := range r.Messages {
			var p stockPayload
			if err := json.Unmarshal(m.Raw, &p); err != nil {
				t.Fatalf("request %s: %v", r.ID, err)
			}
			out = append(out, p)
		}
	}
	return out
}

// allowLoopback is the address policy of tests whose receivers are httptest servers on
// 127.0.0.1 (the engine allows only public addresses by default).
func allowLoopback(t testing.TB) *delivery.AddressPolicy {
	t.Helper()
	p, err := delivery.NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
