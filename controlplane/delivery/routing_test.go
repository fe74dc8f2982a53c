package delivery_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

const heavy = `[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e)))))`

// Routes compiled by the routing package (real CEL): a mapping that fails at run time
// (division by zero) and one that breaches the cost limit dead-letter the event with the
// same error text `crossdock routes test` shows (Route.Evaluate's), and the other events
// are delivered.
func TestCELErrorsDeadLettered(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{})
	docs, err := routing.Parse([]byte(fmt.Sprintf(`
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: >-
    event.keys.sku == "HEAVY"
      ? {"sku": event.inventory_level.sku, "quantity": string(%s.size())}
      : {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available,
         "per_unit": string(100 / int(event.inventory_level.on_hand))}
`, url, testSecret, heavy)))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.NewTable(docs, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := delivery.PlanFromTable(table)
	plan.Version = "1"
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	src.commit(srv.Store(), level{"A", "5"}, level{"ZERO", "0"}, level{"HEAVY", "3"}, level{"B", "7"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)

	if got := m.Quantities(); len(got) != 2 || got["A"] != "5" || got["B"] != "7" {
		t.Fatalf("receiver quantities %v, want A=5 and B=7 only", got)
	}
	route, _ := table.Route("stock")
	for _, tc := range []struct {
		seq  uint64
		want string
	}{{2, "division by zero"}, {3, "CEL cost limit exceeded"}} {
		dls, err := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop", ErrorContains: tc.want})
		if err != nil || len(dls) != 1 || dls[0].GetSeq() != tc.seq {
			t.Fatalf("dead letters with %q: %v, %v; want seq %d", tc.want, dls, err, tc.seq)
		}
		evs, _, _ := l.ListEvents(ledger.Filter{}, tc.seq, 1)
		_, _, evalErr := route.Evaluate(evs[0])
		if evalErr == nil || !strings.HasSuffix(dls[0].GetError(), evalErr.Error()) {
			t.Fatalf("dead letter error %q, want the routes-test error %v", dls[0].GetError(), evalErr)
		}
		if len(dls[0].GetAttempts()) != 0 {
			t.Errorf("a mapping error was sent %d times", len(dls[0].GetAttempts()))
		}
	}
}

// The demo's documents are valid and deliver the demo's inventory to its marketplace
// (rate limit, random failures) at the newest quantities.
func TestDemoDocumentsDeliver(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	d, err := samplemarket.StartDemo("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	docs, err := routing.Parse([]byte(d.Documents()))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.NewTable(docs, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := delivery.PlanFromTable(table)
	plan.Version = "1"
	runEngine(t, srv.Store(), plan)
	b := &storev1.IngestBatch{AgentId: "demo"}
	want := map[string]string{}
	for i := range 600 {
		sku, wh := fmt.Sprintf("SKU-%03d", i%100), []string{"WH-EAST", "WH-WEST"}[i%2]
		qty := fmt.Sprint(i)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(i + 1), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_demo_%d", i), Type: "inventory.level", Keys: map[string]string{"sku": sku, "location": wh},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: wh, Available: qty}},
		}})
		if wh == "WH-EAST" {
			want[sku] = qty
		}
	}
	if _, err := srv.Store().Propose(t.Context(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
		t.Fatal(err)
	}
	waitCursor(t, srv.Store().Ledger(), "demo-market", time.Minute)
	got := d.Quantities()
	if len(got) != len(want) {
		t.Errorf("marketplace has %d SKUs, want %d", len(got), len(want))
	}
	for sku, q := range want {
		if got[sku] != q {
			t.Errorf("%s: marketplace %q, want %q", sku, got[sku], q)
		}
	}
	t.Log(d.Summary())
}

// A destination's fingerprint changes with its own spec, policy or routes, and not with
// another destination's: a routing change restarts only the workers it concerns.
func TestPlanFingerprints(t *testing.T) {
	docs := func(shopRate, erpMapping string) map[string]string {
		t.Helper()
		ds, err := routing.Parse([]byte(fmt.Sprintf(`
apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: pace}
spec: {rateLimit: {perSecond: %s}}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: "https://shop.example.com/in", secret: %q, policy: pace, timeout: 2s, headers: {X-A: "1", X-B: "2"}}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: erp}
spec: {type: webhook, url: "https://erp.example.com/in", secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: to-shop}
spec: {destination: shop, match: {types: [inventory.level]}}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: to-erp}
spec: {destination: erp, match: {types: [order]}, mapping: %q}
`, shopRate, testSecret, testSecret, erpMapping)))
		if err != nil {
			t.Fatal(err)
		}
		table, err := routing.NewTable(ds, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, d := range delivery.PlanFromTable(table).Destinations {
			out[d.Name] = d.Fingerprint
		}
		return out
	}
	a, b := docs("2", "event.order"), docs("2", "event.order")
	if a["shop"] == "" || a["shop"] != b["shop"] || a["erp"] != b["erp"] {
		t.Fatalf("the same documents give different fingerprints: %v, %v", a, b)
	}
	c := docs("5", "event.order")
	if c["shop"] == a["shop"] || c["erp"] != a["erp"] {
		t.Fatalf("a policy change of shop: %v -> %v; want only shop's fingerprint changed", a, c)
	}
	d := docs("2", "event.order.lines")
	if d["erp"] == a["erp"] || d["shop"] != a["shop"] {
		t.Fatalf("a mapping change of to-erp: %v -> %v; want only erp's fingerprint changed", a, d)
	}
}
