package agent_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func orderEvent(id string) *eventv1.Event {
	return &eventv1.Event{Id: canonical.OrderEventID("acme", "PO-7"), Type: "order",
		Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: id, Partner: "acme", PurchaseOrderNumber: "PO-7",
			Lines: []*eventv1.OrderLine{{Sku: "SKU-1", Quantity: "2"}}}}}
}

// TestOrderAck: the ERP's answer as an order.ack, with the contract's id and key, the
// ERP's number when accepted and its reason (without the SDK's "permanent error" marks,
// however often the error crossed the plugin boundary) when refused; nothing for a
// failure a retry may fix or for events that are not orders.
func TestOrderAck(t *testing.T) {
	id := canonical.OrderID("acme", "PO-7")
	ev := orderEvent(id)

	acc := agent.OrderAck(ev, sdk.WriteResult{EventID: ev.Id, Ref: "SO-42"})
	if acc == nil {
		t.Fatal("no ack for an accepted order")
	}
	if acc.Id != canonical.OrderAckEventID(id) || acc.Keys["order"] != id || acc.Type != "order.ack" {
		t.Fatalf("ack id %q keys %v type %q", acc.Id, acc.Keys, acc.Type)
	}
	a := acc.GetOrderAck()
	if a.Status != "accepted" || a.ErpOrderNumber != "SO-42" || a.OrderNumber != id || a.Partner != "acme" || a.PurchaseOrderNumber != "PO-7" {
		t.Fatalf("accepted ack %v", a)
	}

	// As the host sees a plugin's refusal: marked permanent in the plugin and again on
	// the host's side.
	refusal := sdk.Permanent(errors.New(sdk.Permanent(errors.New(`order "x": lines[0]: Tryton has no product with code "NOPE"`)).Error()))
	rej := agent.OrderAck(ev, sdk.WriteResult{EventID: ev.Id, Err: refusal})
	if rej == nil || rej.Id != canonical.OrderAckEventID(id) {
		t.Fatalf("rejected ack %v", rej)
	}
	if r := rej.GetOrderAck(); r.Status != "rejected" || r.Message != `order "x": lines[0]: Tryton has no product with code "NOPE"` {
		t.Fatalf("rejected ack %v", r)
	}

	if got := agent.OrderAck(ev, sdk.WriteResult{EventID: ev.Id, Err: fmt.Errorf("tryton: connection refused")}); got != nil {
		t.Fatalf("ack for a retryable failure: %v", got)
	}
	if got := agent.OrderAck(ev, sdk.WriteResult{EventID: ev.Id}); got != nil {
		t.Fatalf("ack for a write without a number: %v", got)
	}
	lvl := &eventv1.Event{Id: "x", Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "A", Location: "B", OnHand: "1"}}}
	if got := agent.OrderAck(lvl, sdk.WriteResult{EventID: "x", Ref: "1"}); got != nil {
		t.Fatalf("ack for an inventory level: %v", got)
	}

	// An order without order_number: the Crossdock id from partner and PO.
	ev2 := orderEvent("")
	if got := agent.OrderAck(ev2, sdk.WriteResult{Ref: "SO-1"}); got == nil || got.Keys["order"] != id {
		t.Fatalf("ack of an order without order_number: %v", got)
	}
}
