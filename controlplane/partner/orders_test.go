package partner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// orderDocs: shopa orders A-* from WH-1 with the availability check; shopb orders
// anything.
const orderDocs = `
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: shopa
spec:
  tier: standard
  scopes: [orders:write, orders:read]
  locations: [WH-1]
  skus: ["A-*"]
  orders:
    checkAvailability: true
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: shopb
spec:
  tier: standard
  scopes: [orders:write, orders:read]
  skus: ["*"]
`

func order(po string, lines ...*partnerv1.OrderLine) *partnerv1.SubmitOrderRequest {
	if len(lines) == 0 {
		lines = []*partnerv1.OrderLine{{Sku: "A-1", Quantity: "2", UnitPrice: "9.90"}, {Sku: "A-2", Quantity: "1"}}
	}
	return &partnerv1.SubmitOrderRequest{PurchaseOrderNumber: po, Currency: "EUR", Location: "WH-1", Lines: lines,
		ShipTo: &partnerv1.Party{Name: "Shop A", AddressLines: []string{"1 Main St"}, City: "Lyon", Country: "FR"}}
}

// orderEvents returns the ledger's events of type typ whose id is id, on node.
func orderEvents(t *testing.T, node *controlplanetest.Server, typ, id string) []*eventv1.Event {
	t.Helper()
	var out []*eventv1.Event
	_, err := node.Store().Ledger().ScanRaw(1, 0, func(ev ledger.RawEvent) error {
		var e eventv1.Event
		if err := proto.Unmarshal(ev.Event, &e); err != nil {
			return err
		}
		if e.GetType() == typ && (id == "" || e.GetId() == id) {
			out = append(out, &e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantCode(t *testing.T, err error, code connect.Code, msgPart string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || !strings.Contains(ce.Message(), msgPart) {
		t.Fatalf("got %v, want %s containing %q", err, code, msgPart)
	}
}

// TestSubmitOrderIdempotent: the same order twice is one order; another order under the
// same purchase order number is a conflict; the ledger holds the order once.
func TestSubmitOrderIdempotent(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a := e.client(n, e.key("shopa", 0))
	ctx := context.Background()
	res, err := a.SubmitOrder(ctx, connect.NewRequest(order("PO-1")))
	if err != nil {
		t.Fatal(err)
	}
	id := canonical.OrderID("shopa", "PO-1")
	if res.Msg.GetOrderId() != id || res.Msg.GetStatus() != "received" || res.Msg.GetSeq() == 0 || res.Msg.GetDuplicate() {
		t.Fatalf("first submission: %v, want order %s received, not a duplicate", res.Msg, id)
	}
	again, err := a.SubmitOrder(ctx, connect.NewRequest(order("PO-1")))
	if err != nil {
		t.Fatal(err)
	}
	if again.Msg.GetOrderId() != id || !again.Msg.GetDuplicate() || again.Msg.GetSeq() != res.Msg.GetSeq() {
		t.Fatalf("second submission: %v, want the same order %s at seq %d as a duplicate", again.Msg, id, res.Msg.GetSeq())
	}
	other := order("PO-1", &partnerv1.OrderLine{Sku: "A-1", Quantity: "3"})
	_, err = a.SubmitOrder(ctx, connect.NewRequest(other))
	wantCode(t, err, connect.CodeAlreadyExists, "purchase_order_number: another order was submitted under this purchase order number (order "+id)
	evs := orderEvents(t, n, "order", canonical.OrderEventID("shopa", "PO-1"))
	if len(evs) != 1 {
		t.Fatalf("ledger holds %d order events for PO-1, want 1", len(evs))
	}
	o := evs[0].GetOrder()
	if o.GetOrderNumber() != id || o.GetPartner() != "shopa" || o.GetPurchaseOrderNumber() != "PO-1" || evs[0].GetKeys()["order"] != id ||
		evs[0].GetSource().GetAgent() != "partner:shopa" || len(o.GetLines()) != 2 || o.GetLines()[0].GetLineNumber() != "1" {
		t.Fatalf("order event %v", evs[0])
	}
	got, err := a.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{PurchaseOrderNumber: "PO-1", MinSeq: res.Msg.GetSeq()}))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.Msg.GetOrder(); g.GetOrderId() != id || g.GetStatus() != "received" || len(g.GetSteps()) != 1 || g.GetSteps()[0].GetSeq() != res.Msg.GetSeq() || len(g.GetLines()) != 2 {
		t.Fatalf("GetOrder: %v", got.Msg)
	}
}

// TestSubmitOrderIdempotentPastDedup: the order view recognises a resubmission even when
// the ledger's id dedup would not (here: the order came in under another agent's id
// space, as after the dedup window).
func TestSubmitOrderViewDedup(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a := e.client(n, e.key("shopa", 0))
	ctx := context.Background()
	id := canonical.OrderID("shopa", "PO-EDI")
	// The same order committed by another agent (its id space is not the partner's).
	ev := &eventv1.Event{Type: "order", Keys: map[string]string{"order": id}, Payload: &eventv1.Event_Order{Order: &eventv1.Order{
		OrderNumber: id, Partner: "shopa", PurchaseOrderNumber: "PO-EDI", Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "A-1", Quantity: "5"}}}}}
	seq := e.propose(ev)
	controlplanetest.WaitFor(t, 10*time.Second, "order view", func() bool { return n.Orders().Seq() >= seq })
	_, err := a.SubmitOrder(ctx, connect.NewRequest(&partnerv1.SubmitOrderRequest{PurchaseOrderNumber: "PO-EDI", Lines: []*partnerv1.OrderLine{{Sku: "A-1", Quantity: "6"}}}))
	wantCode(t, err, connect.CodeAlreadyExists, "order.lines[0].quantity")
	if got := len(orderEvents(t, n, "order", "")); got != 1 {
		t.Fatalf("ledger holds %d order events, want 1", got)
	}
}

// TestSubmitOrderValidation: every refusal names its field, and nothing is committed.
func TestSubmitOrderValidation(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	key := "Bearer " + e.key("shopa", 0)
	line := func(kv ...any) map[string]any {
		m := map[string]any{"sku": "A-1", "quantity": "1"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	body := func(kv ...any) map[string]any {
		m := map[string]any{"purchaseOrderNumber": "PO-V", "lines": []any{line()}}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name, field, msg string
		body             map[string]any
	}{
		{"no purchase order number", "purchase_order_number", "required", body("purchaseOrderNumber", "")},
		{"purchase order number too long", "purchase_order_number", "at most 128", body("purchaseOrderNumber", strings.Repeat("x", 129))},
		{"no lines", "lines", "0 lines, want 1 to 10", body("lines", []any{})},
		{"too many lines", "lines", "11 lines, want 1 to 10", body("lines", []any{line(), line(), line(), line(), line(), line(), line(), line(), line(), line(), line()})},
		{"SKU not the partner's", "lines[0].sku", `"B-1" is not one of your SKUs`, body("lines", []any{line("sku", "B-1")})},
		{"unknown SKU", "lines[0].sku", `unknown SKU "A-9"`, body("lines", []any{line("sku", "A-9")})},
		{"no SKU", "lines[0].sku", "must be 1 to 128", body("lines", []any{line("sku", "")})},
		{"zero quantity", "lines[0].quantity", "not a positive decimal", body("lines", []any{line("quantity", "0")})},
		{"negative quantity", "lines[0].quantity", "not a positive decimal", body("lines", []any{line("quantity", "-2")})},
		{"quantity not a number", "lines[0].quantity", "not a positive decimal", body("lines", []any{line("quantity", "two")})},
		{"more than available", "lines[0].quantity", "101 ordered, 100 available to you", body("lines", []any{line("quantity", "101")})},
		{"negative price", "lines[0].unit_price", "not a non-negative decimal", body("lines", []any{line("unitPrice", "-1")})},
		{"duplicate line number", "lines[1].line_number", `"7" is also the number of lines[0]`, body("lines", []any{line("lineNumber", "7"), line("lineNumber", "7", "sku", "A-2")})},
		{"location not the partner's", "location", `"WH-2" is not one of your locations`, body("location", "WH-2")},
		{"bad currency", "currency", "ISO 4217", body("currency", "eur")},
		{"bad country", "ship_to.country", "ISO 3166", body("shipTo", map[string]any{"name": "x", "country": "France"})},
		{"control character in notes", "notes", "control character", body("notes", "a\x00b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, b := e.post(n, "SubmitOrder", key, tc.body)
			ce := wantRefusal(t, res, b, http.StatusBadRequest, "invalid_argument", tc.field+": ")
			if !strings.Contains(ce.Message, tc.msg) {
				t.Fatalf("message %q does not say %q", ce.Message, tc.msg)
			}
			if len(ce.Details) != 1 || !strings.Contains(string(ce.Details[0].Debug), `"field":"`+tc.field+`"`) {
				t.Fatalf("want a BadRequest detail naming %s, got %s", tc.field, b)
			}
		})
	}
	if got := orderEvents(t, n, "order", ""); len(got) != 0 {
		t.Fatalf("refused orders committed %d events", len(got))
	}
	// Without orders:write (acme holds availability:read only) the gate refuses.
	res, b := e.post(n, "SubmitOrder", "Bearer "+e.key("acme", 0), body())
	wantRefusal(t, res, b, http.StatusForbidden, "permission_denied", "orders:write")
}

// TestOrderIsolation: partner B can neither read, list, cancel, return nor guess A's
// orders; each answer is the one of an order that does not exist.
func TestOrderIsolation(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a, b := e.client(n, e.key("shopa", 0)), e.client(n, e.key("shopb", 0))
	ctx := context.Background()
	res, err := a.SubmitOrder(ctx, connect.NewRequest(order("PO-SECRET")))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetOrderId()
	waitOrders(t, n, res.Msg.GetSeq())
	_, err = b.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{OrderId: id}))
	wantCode(t, err, connect.CodeNotFound, `order_id: no order "`+id+`" among your orders`)
	_, missing := b.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{OrderId: "ord_00000000000000000000"}))
	wantCode(t, missing, connect.CodeNotFound, "among your orders")
	_, err = b.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{PurchaseOrderNumber: "PO-SECRET"}))
	wantCode(t, err, connect.CodeNotFound, "among your orders")
	_, err = b.CancelOrder(ctx, connect.NewRequest(&partnerv1.CancelOrderRequest{OrderId: id}))
	wantCode(t, err, connect.CodeNotFound, "among your orders")
	_, err = b.RequestReturn(ctx, connect.NewRequest(&partnerv1.RequestReturnRequest{OrderId: id, ReturnReference: "R1", Reason: "x", Lines: []*partnerv1.ReturnLine{{LineNumber: "1", Quantity: "1"}}}))
	wantCode(t, err, connect.CodeNotFound, "among your orders")
	list, err := b.ListOrders(ctx, connect.NewRequest(&partnerv1.ListOrdersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetOrders()) != 0 {
		t.Fatalf("shopb lists %v", list.Msg.GetOrders())
	}
	// B submitting under A's purchase order number gets its own order.
	mine, err := b.SubmitOrder(ctx, connect.NewRequest(order("PO-SECRET")))
	if err != nil {
		t.Fatal(err)
	}
	if mine.Msg.GetOrderId() == id || mine.Msg.GetDuplicate() {
		t.Fatalf("shopb's PO-SECRET answered %v, A's order is %s", mine.Msg, id)
	}
	if got, err := a.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{OrderId: id})); err != nil || got.Msg.GetOrder().GetStatus() != "received" {
		t.Fatalf("A's order after B's calls: %v %v", got, err)
	}
}

func waitOrders(t *testing.T, n *controlplanetest.Server, seq uint64) {
	t.Helper()
	controlplanetest.WaitFor(t, 10*time.Second, "order view", func() bool { return n.Orders().Seq() >= seq })
}

func status(t *testing.T, c interface {
	GetOrder(context.Context, *connect.Request[partnerv1.GetOrderRequest]) (*connect.Response[partnerv1.GetOrderResponse], error)
}, id string, seq uint64) *partnerv1.Order {
	t.Helper()
	res, err := c.GetOrder(context.Background(), connect.NewRequest(&partnerv1.GetOrderRequest{OrderId: id, MinSeq: seq}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetOrder()
}

// TestOrderLifecycle: the ERP's answer, shipments, the invoice and a return move the
// status; a shipped order cannot be cancelled; every change is told to the partner by an
// order.status event.
func TestOrderLifecycle(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a := e.client(n, e.key("shopa", 0))
	ctx := context.Background()
	res, err := a.SubmitOrder(ctx, connect.NewRequest(order("PO-L")))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetOrderId()
	seq := e.propose(&eventv1.Event{Type: "order.ack", Keys: map[string]string{"order": id}, Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{
		OrderNumber: id, ErpOrderNumber: "SO-77", Status: "accepted"}}})
	if o := status(t, a, id, seq); o.GetStatus() != "accepted" || o.GetErpOrderNumber() != "SO-77" {
		t.Fatalf("after the ack: %v", o)
	}
	// A shipment joined by the ERP's number, for part of line 1.
	ship := func(num string, lines ...*eventv1.ShipmentLine) uint64 {
		return e.propose(&eventv1.Event{Type: "shipment", Keys: map[string]string{"shipment": num}, Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{
			ShipmentNumber: num, OrderNumber: "SO-77", TrackingNumber: "TRK-" + num, Lines: lines}}})
	}
	seq = ship("SH-1", &eventv1.ShipmentLine{OrderLineNumber: "1", Sku: "A-1", Quantity: "1"})
	if o := status(t, a, id, seq); o.GetStatus() != "partially_shipped" {
		t.Fatalf("after part of line 1: %v", o)
	}
	_, err = a.CancelOrder(ctx, connect.NewRequest(&partnerv1.CancelOrderRequest{OrderId: id, Reason: "too late"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "partially_shipped and can no longer be cancelled")
	seq = ship("SH-2", &eventv1.ShipmentLine{OrderLineNumber: "1", Sku: "A-1", Quantity: "1"}, &eventv1.ShipmentLine{OrderLineNumber: "2", Sku: "A-2", Quantity: "1"})
	if o := status(t, a, id, seq); o.GetStatus() != "shipped" {
		t.Fatalf("after every line shipped: %v", o)
	}
	seq = e.propose(&eventv1.Event{Type: "invoice", Keys: map[string]string{"invoice": "INV-1", "order": id}, Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{
		InvoiceNumber: "INV-1", OrderNumber: id, Total: "20.80", Currency: "EUR"}}})
	if o := status(t, a, id, seq); o.GetStatus() != "invoiced" {
		t.Fatalf("after the invoice: %v", o)
	}
	rr := &partnerv1.RequestReturnRequest{OrderId: id, ReturnReference: "RMA-1", Reason: "damaged", Lines: []*partnerv1.ReturnLine{{LineNumber: "1", Quantity: "1"}}}
	_, err = a.RequestReturn(ctx, connect.NewRequest(&partnerv1.RequestReturnRequest{OrderId: id, ReturnReference: "RMA-0", Reason: "x", Lines: []*partnerv1.ReturnLine{{LineNumber: "1", Quantity: "3"}}}))
	wantCode(t, err, connect.CodeInvalidArgument, "lines[0].quantity: 3 is more than the 2 ordered")
	ret, err := a.RequestReturn(ctx, connect.NewRequest(rr))
	if err != nil {
		t.Fatal(err)
	}
	o := status(t, a, id, ret.Msg.GetSeq())
	if o.GetStatus() != "return_requested" {
		t.Fatalf("after the return: %v", o)
	}
	var kinds []string
	for _, s := range o.GetSteps() {
		kinds = append(kinds, s.GetEventType()+"="+s.GetStatus())
		if s.GetSeq() == 0 || s.GetAt() == nil {
			t.Fatalf("step without seq or time: %v", s)
		}
	}
	want := "order=received order.ack=accepted shipment=partially_shipped shipment=shipped invoice=invoiced sales.return=return_requested"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("steps %v, want %s", kinds, want)
	}
	again, err := a.RequestReturn(ctx, connect.NewRequest(rr))
	if err != nil || !again.Msg.GetDuplicate() {
		t.Fatalf("the same return again: %v %v, want a duplicate", again, err)
	}
	// Every status was told to the partner: one order.status event per change, in order.
	controlplanetest.WaitFor(t, 10*time.Second, "order.status events", func() bool {
		return len(orderEvents(t, n, "order.status", "")) == 6
	})
	var told []string
	for _, ev := range orderEvents(t, n, "order.status", "") {
		s := ev.GetOrderStatus()
		if s.GetOrderNumber() != id || s.GetPartner() != "shopa" || ev.GetKeys()["partner"] != "shopa" {
			t.Fatalf("order.status event %v", ev)
		}
		told = append(told, s.GetStatus())
	}
	if got := strings.Join(told, " "); got != "received accepted partially_shipped shipped invoiced return_requested" {
		t.Fatalf("told %s", got)
	}
}

// TestCancelAndList: a cancellation is committed and shown; ListOrders filters by status
// and pages newest first.
func TestCancelAndList(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	n := e.nodes[0]
	a := e.client(n, e.key("shopa", 0))
	ctx := context.Background()
	var ids []string
	var last uint64
	for _, po := range []string{"PO-1", "PO-2", "PO-3"} {
		res, err := a.SubmitOrder(ctx, connect.NewRequest(order(po)))
		if err != nil {
			t.Fatal(err)
		}
		ids, last = append(ids, res.Msg.GetOrderId()), res.Msg.GetSeq()
	}
	waitOrders(t, n, last)
	c, err := a.CancelOrder(ctx, connect.NewRequest(&partnerv1.CancelOrderRequest{OrderId: ids[1], Reason: "ordered twice"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Msg.GetStatus() != "cancel_requested" {
		t.Fatalf("cancel: %v", c.Msg)
	}
	if evs := orderEvents(t, n, "order.cancel", "order.cancel:"+ids[1]); len(evs) != 1 || evs[0].GetOrderCancel().GetReason() != "ordered twice" {
		t.Fatalf("order.cancel events %v", evs)
	}
	if o := status(t, a, ids[1], c.Msg.GetSeq()); o.GetStatus() != "cancel_requested" || o.GetMessage() != "ordered twice" {
		t.Fatalf("after cancel: %v", o)
	}
	page, err := a.ListOrders(ctx, connect.NewRequest(&partnerv1.ListOrdersRequest{PageSize: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Msg.GetOrders()) != 2 || page.Msg.GetOrders()[0].GetOrderId() != ids[2] || page.Msg.GetOrders()[1].GetOrderId() != ids[1] || page.Msg.GetNextPageToken() == "" {
		t.Fatalf("first page %v", page.Msg)
	}
	next, err := a.ListOrders(ctx, connect.NewRequest(&partnerv1.ListOrdersRequest{PageSize: 2, PageToken: page.Msg.GetNextPageToken()}))
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Msg.GetOrders()) != 1 || next.Msg.GetOrders()[0].GetOrderId() != ids[0] || next.Msg.GetNextPageToken() != "" {
		t.Fatalf("second page %v", next.Msg)
	}
	byStatus, err := a.ListOrders(ctx, connect.NewRequest(&partnerv1.ListOrdersRequest{Status: "cancel_requested"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(byStatus.Msg.GetOrders()) != 1 || byStatus.Msg.GetOrders()[0].GetOrderId() != ids[1] {
		t.Fatalf("cancel_requested: %v", byStatus.Msg)
	}
	_, err = a.ListOrders(ctx, connect.NewRequest(&partnerv1.ListOrdersRequest{Status: "lost"}))
	wantCode(t, err, connect.CodeInvalidArgument, `status: "lost" is not a status`)
}

// TestOrderStatusPushedToWebhook: a route of order.status events for the partner delivers
// each status change of its order to its webhook, in order.
func TestOrderStatusPushedToWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m struct{ Order, Status string }
		if err := json.Unmarshal(b, &m); err == nil {
			mu.Lock()
			got = append(got, m.Order+" "+m.Status)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	docs := orderDocs + fmt.Sprintf(`---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shopa-webhook}
spec: {type: webhook, url: %q, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shopa-order-status}
spec:
  destination: shopa-webhook
  match: {types: [order.status], keys: {partner: shopa}}
  mapping: |
    {"order": event.order_status.order_number, "status": event.order_status.status}
`, recv.URL)
	e := newEnvConfig(t, 1, docs, func(c *controlplane.Config) {
		c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	n := e.nodes[0]
	a, b := e.client(n, e.key("shopa", 0)), e.client(n, e.key("shopb", 0))
	ctx := context.Background()
	res, err := a.SubmitOrder(ctx, connect.NewRequest(order("PO-W")))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetOrderId()
	if _, err := b.SubmitOrder(ctx, connect.NewRequest(order("PO-W"))); err != nil { // shopb's: not routed to shopa
		t.Fatal(err)
	}
	e.propose(&eventv1.Event{Type: "order.ack", Keys: map[string]string{"order": id}, Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{
		OrderNumber: id, Status: "rejected", Message: "credit hold"}}})
	want := []string{id + " received", id + " rejected"}
	controlplanetest.WaitFor(t, 20*time.Second, "both status changes at the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("webhook got %v, want %v", got, want)
	}
}

// TestSubmitOrderConcurrentResends: the same order sent 20 times at once (past the
// order view, which has not seen it yet) is committed once: the ledger's id dedup in the
// partner's id space answers the others as duplicates.
func TestSubmitOrderConcurrentResends(t *testing.T) {
	e := newEnv(t, 1, orderDocs)
	a := e.client(e.nodes[0], e.key("shopb", 0))
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh, dups := 0, 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := a.SubmitOrder(context.Background(), connect.NewRequest(order("PO-RACE")))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("resend: %v", err)
			case res.Msg.GetOrderId() != canonical.OrderID("shopb", "PO-RACE"):
				t.Errorf("resend answered %v", res.Msg)
			case res.Msg.GetDuplicate():
				dups++
			default:
				fresh++
			}
		}()
	}
	wg.Wait()
	if fresh != 1 || dups != 19 {
		t.Fatalf("%d answered as new, %d as duplicates; want 1 and 19", fresh, dups)
	}
	if evs := orderEvents(t, e.nodes[0], "order", ""); len(evs) != 1 {
		t.Fatalf("ledger holds %d order events, want 1", len(evs))
	}
}
