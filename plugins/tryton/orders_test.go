package tryton_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// partnerOrderDocs route partners' orders (not the ERP's own sale events, which carry
// no partner) to the agent's Tryton connector.
const partnerOrderDocs = `
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: tryton-orders}
spec: {type: agent, agent: erp-orders-agent, connector: erp}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: partner-orders-to-tryton}
spec:
  match: {types: [order]}
  filter: event.order.partner != ""
  destinations: [tryton-orders]
`

// partnerOrder is a partner's order as the contract has it: id order:<partner>:<po>,
// key order and order_number the Crossdock id.
func partnerOrder(partner, po string, lines ...*eventv1.OrderLine) *eventv1.Event {
	id := canonical.OrderID(partner, po)
	return &eventv1.Event{Id: canonical.OrderEventID(partner, po), Type: "order", Keys: map[string]string{"order": id},
		Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: id, Partner: partner, PurchaseOrderNumber: po,
			Currency: "EUR", Lines: lines}}}
}

// testPartnerOrders: the whole loop through a real control plane, a real agent running
// the connector as a plugin process, and real Tryton. A partner's order committed to the
// ledger is routed to the agent's Tryton sink, becomes a confirmed sale (read back
// through Tryton's own RPC) and an order.ack "accepted" with Tryton's number; an order
// for a product Tryton does not know becomes an order.ack "rejected" with Tryton's
// reason; the sale's shipment, done in Tryton, comes back as a shipment event keyed by
// the Crossdock order id, and so do the sale's state changes.
func testPartnerOrders(t *testing.T, e *erp) {
	bin, sum := buildPlugin(t)
	srv := controlplanetest.TestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	settings := e.settings(`,"inventory":false,"confirm_partners":["acme"],"invoice_method":"manual"`)
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{srv.Addr()},
		EnrollToken: srv.Token(t, time.Minute, "erp-orders-agent"), LocalAddr: "-", Logger: controlplanetest.Logger(t),
		PluginMinBackoff: 50 * time.Millisecond, PluginMaxBackoff: time.Second,
		Connectors: []pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: settings}}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	applyDocs(t, srv.AdminConfigPath(), partnerOrderDocs)

	p := e.product(t, "PO-SKU-1")
	e.party(t, "acme")
	e.move(t, p, e.supplier, e.storage, 10)
	good := partnerOrder("acme", "PO-1", &eventv1.OrderLine{LineNumber: "1", Sku: "PO-SKU-1", Quantity: "3", UnitPrice: "9.50"})
	bad := partnerOrder("acme", "PO-2", &eventv1.OrderLine{LineNumber: "1", Sku: "NOT-IN-TRYTON", Quantity: "1"})
	goodID, badID := canonical.OrderID("acme", "PO-1"), canonical.OrderID("acme", "PO-2")
	// Committed as any partner order is: here through the agent's Publish (a partner
	// API commits it through raft itself; the route does not care).
	if _, err := a.Publish(ctx, "partners", []*eventv1.Event{good, bad}); err != nil {
		t.Fatal(err)
	}

	l := srv.Store().Ledger()
	ack := func(id string) *eventv1.CommittedEvent {
		var got *eventv1.CommittedEvent
		testutil.WaitFor(t, 90*time.Second, "order.ack for "+id, func() bool {
			evs, _, err := l.ListEvents(ledger.Filter{Type: "order.ack", Keys: map[string]string{"order": id}}, 1, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > 1 {
				t.Fatalf("%d acks for %s", len(evs), id)
			}
			if len(evs) == 1 {
				got = evs[0]
			}
			return got != nil
		})
		return got
	}
	acc := ack(goodID)
	if acc.Event.Id != canonical.OrderAckEventID(goodID) || acc.Event.GetOrderAck().GetStatus() != "accepted" ||
		acc.Event.GetOrderAck().GetErpOrderNumber() == "" || acc.Event.GetOrderAck().GetPurchaseOrderNumber() != "PO-1" {
		t.Fatalf("ack for the good order: %v", acc)
	}
	number := acc.Event.GetOrderAck().GetErpOrderNumber()
	var sales []struct {
		ID        int64   `json:"id"`
		Number    string  `json:"number"`
		State     string  `json:"state"`
		Reference string  `json:"reference"`
		Shipments []int64 `json:"shipments"`
	}
	e.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", goodID}}, 0, nil, nil,
		[]string{"number", "state", "reference", "shipments"})
	if len(sales) != 1 || sales[0].Number != number || (sales[0].State != "confirmed" && sales[0].State != "processing") {
		t.Fatalf("sales in Tryton for %s: %+v, want one confirmed with number %s", goodID, sales, number)
	}
	if len(sales[0].Shipments) != 1 {
		t.Fatalf("the confirmed sale has shipments %v, want one (Tryton processed it)", sales[0].Shipments)
	}

	rej := ack(badID)
	if a := rej.Event.GetOrderAck(); a.GetStatus() != "rejected" || !strings.Contains(a.GetMessage(), `Tryton has no product with code "NOT-IN-TRYTON"`) ||
		strings.Contains(a.GetMessage(), "permanent error") {
		t.Fatalf("ack for the bad order: %v", rej)
	}

	// The warehouse ships the sale in Tryton.
	sh := sales[0].Shipments
	e.Model(t, "stock.shipment.out", "assign_force", sh)
	e.Model(t, "stock.shipment.out", "pick", sh)
	e.Model(t, "stock.shipment.out", "pack", sh)
	e.Model(t, "stock.shipment.out", "done", sh)
	var shs []struct {
		State string `json:"state"`
	}
	e.Into(t, &shs, "stock.shipment.out", "read", sh, []string{"state"})
	if len(shs) != 1 || shs[0].State != "done" {
		t.Fatalf("shipment %v after assign, pick, pack, done: %+v", sh, shs)
	}
	var shipped *eventv1.CommittedEvent
	testutil.WaitFor(t, 60*time.Second, "a shipment event keyed by order "+goodID, func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "shipment", Keys: map[string]string{"order": goodID}}, 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			shipped = evs[0]
		}
		return shipped != nil
	})
	s := shipped.Event.GetShipment()
	if s.GetOrderNumber() != goodID || s.GetStatus() != "shipped" || shipped.Event.Keys["erp_order"] != number ||
		len(s.GetLines()) != 1 || s.GetLines()[0].GetSku() != "PO-SKU-1" || s.GetLines()[0].GetQuantity() != "3" || s.GetShippedAt() == nil {
		t.Fatalf("shipment event %v", shipped)
	}
	// The sale's own state changes join the order too.
	testutil.WaitFor(t, 30*time.Second, "the sale's state changes keyed by order "+goodID, func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "order", Keys: map[string]string{"order": goodID}}, 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ce := range evs {
			if o := ce.Event.GetOrder(); ce.Event.Source.GetConnector() == "erp" && o.GetOrderNumber() == number &&
				(o.GetStatus() == "processing" || o.GetStatus() == "done") {
				return true
			}
		}
		return false
	})
}

// applyDocs applies routing documents the way `crossdock apply` does.
func applyDocs(t *testing.T, adminConfig, src string) {
	t.Helper()
	c, err := cliconfig.Load(adminConfig)
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	rc := routingv1connect.NewRoutingServiceClient(hc, base)
	if _, err := rc.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: src})); err != nil {
		t.Fatalf("apply: %v", err)
	}
}
