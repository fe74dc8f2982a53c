package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// receiver is a partner's webhook endpoint on a real loopback HTTP server: the first
// request for SKU A-100 fails with 503 (one retry), SKU BAD-1 is refused with 422
// (a dead letter) until accept is set.
type receiver struct {
	mu     sync.Mutex
	got    map[string]int
	accept atomic.Bool
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var m struct {
		SKU string `json:"sku"`
	}
	_ = json.Unmarshal(b, &m)
	rc.mu.Lock()
	rc.got[m.SKU]++
	n := rc.got[m.SKU]
	rc.mu.Unlock()
	switch {
	case m.SKU == "A-100" && n == 1:
		w.WriteHeader(http.StatusServiceUnavailable)
	case m.SKU == "BAD-1" && !rc.accept.Load():
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, "unknown sku BAD-1")
	default:
		w.WriteHeader(http.StatusOK)
	}
}

type fixture struct {
	srv      *controlplanetest.Server
	cc       *cliconfig.Config
	recv     *receiver
	timeline adminv1connect.TimelineServiceClient
	dlq      deliveryv1connect.DeliveryServiceClient
	agentID  string
}

const fixtureSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// newFixture starts a real control plane node, a webhook destination "shop" with a
// route for inventory levels, and a real in-process agent that publishes four
// events: A-100 twice (the first delivery retried once), BAD-1 (dead-lettered) and
// B-200. It returns once the destination's cursor passed all four.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.AlertInterval = 200 * time.Millisecond
	})
	rc := &receiver{got: map[string]int{}}
	hs := httptest.NewServer(rc)
	t.Cleanup(hs.Close)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
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
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: shop-dead-letters}
spec: {condition: deadLetters, destinations: [shop], severity: critical}
`, hs.URL, fixtureSecret)
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(context.Background(),
		connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		t.Fatalf("apply the destination and route: %v", err)
	}
	f := &fixture{srv: srv, cc: cc, recv: rc, agentID: "erp-console",
		timeline: adminv1connect.NewTimelineServiceClient(hc, base), dlq: deliveryv1connect.NewDeliveryServiceClient(hc, base)}

	tok, err := srv.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: f.agentID}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{srv.Addr()}, EnrollToken: tok.Msg.GetToken(),
		LocalAddr: "-", Logger: controlplanetest.Logger(t)})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var evs []*eventv1.Event
	for i, sku := range []string{"A-100", "BAD-1", "B-200", "A-100"} {
		evs = append(evs, &eventv1.Event{
			Type: "inventory.level", Keys: map[string]string{"sku": sku, "location": "WH1"},
			Source: &eventv1.Source{Position: fmt.Sprintf("fixture:%d", i)},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
				Sku: sku, Location: "WH1", OnHand: fmt.Sprint(10 + i), Available: fmt.Sprint(10 + i),
			}},
		})
	}
	if _, err := a.Publish(context.Background(), "", evs); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "shop's cursor to pass the four events, one dead-lettered", func() bool {
		st, err := f.dlq.GetDeliveryStatus(context.Background(), connect.NewRequest(&deliveryv1.GetDeliveryStatusRequest{}))
		if err != nil || len(st.Msg.GetDestinations()) != 1 {
			return false
		}
		d := st.Msg.GetDestinations()[0]
		return d.GetCursor() > 4 && d.GetOpenDeadLetters() == 1
	})
	return f
}

// openDeadLetter is the id of the dead letter of BAD-1.
func (f *fixture) openDeadLetter(t *testing.T) string {
	t.Helper()
	res, err := f.dlq.ListDeadLetters(context.Background(), connect.NewRequest(&deliveryv1.ListDeadLettersRequest{Destination: "shop"}))
	if err != nil || len(res.Msg.GetDeadLetters()) != 1 {
		t.Fatalf("dead letters of shop: %v %v, want one", res, err)
	}
	return res.Msg.GetDeadLetters()[0].GetId()
}
