package wire

import (
	"github.com/crossdock/crossdock/internal/canonical"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

const wireAgent = "agent-7"

// wireEvents returns a valid event of every payload type, with every field set.
func wireEvents() []*eventv1.Event {
	ts := timestamppb.New(timestamppb.Now().AsTime())
	base := func(typ string) *eventv1.Event {
		return &eventv1.Event{
			Id: "agent-7:erp:" + typ, Type: typ, OccurredAt: ts,
			Keys:   map[string]string{"sku": "SKU-1", "warehouse_2": "Lyon Nord", "order_number": "SO-1"},
			Source: &eventv1.Source{Agent: wireAgent, Connector: "erp", Position: "lsn:0/16B3748"},
			Trace:  &eventv1.TraceContext{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Tracestate: "k=v"},
		}
	}
	lines := []*eventv1.ShipmentLine{{Sku: "SKU-1", Quantity: "2"}, {Sku: "SKU-2", Quantity: "0.5"}}
	item := base(canonical.TypeItem)
	item.Payload = &eventv1.Event_Item{Item: &eventv1.Item{Sku: "SKU-1", Name: "Bolt", Description: "M6 ✓", UnitOfMeasure: "ea", Gtin: "0123"}}
	inv := base(canonical.TypeInventoryLevel)
	inv.Payload = &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "SKU-1", Location: "WH1", OnHand: "12", Allocated: "-2.5", Available: "9.50", UnitOfMeasure: "ea"}}
	price := base(canonical.TypePrice)
	price.Payload = &eventv1.Event_Price{Price: &eventv1.Price{Sku: "SKU-1", PriceList: "retail", Currency: "EUR", Amount: "9.99", ValidFrom: ts, ValidTo: ts}}
	order := base(canonical.TypeOrder)
	order.Payload = &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "SO-1", Channel: "web", Customer: "C1", Status: "new", Currency: "EUR", Total: "19.98",
		Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2", UnitPrice: "9.99"}, {Sku: "SKU-2", Quantity: "1"}}}}
	ack := base(canonical.TypeOrderAck)
	ack.Payload = &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: "SO-1", ErpOrderNumber: "E-1", Status: "accepted", Message: "ok"}}
	ship := base(canonical.TypeShipment)
	ship.Payload = &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "SH-1", OrderNumber: "SO-1", Carrier: "DHL", TrackingNumber: "T1", Status: "shipped", ShippedAt: ts, Lines: lines}}
	inv2 := base(canonical.TypeInvoice)
	inv2.Payload = &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "IN-1", OrderNumber: "SO-1", Currency: "EUR", Total: "19.98"}}
	ret := base(canonical.TypeSalesReturn)
	ret.Payload = &eventv1.Event_SalesReturn{SalesReturn: &eventv1.SalesReturn{ReturnNumber: "R-1", OrderNumber: "SO-1", Status: "received", Lines: []*eventv1.ShipmentLine{{Sku: "SKU-1"}}}}
	minimal := &eventv1.Event{Id: "x", Type: canonical.TypeItem, Source: &eventv1.Source{Agent: wireAgent}, Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "S"}}}
	return []*eventv1.Event{item, inv, price, order, ack, ship, inv2, ret, minimal}
}

// slowValid is what the leader checks the slow way, after decoding.
func slowValid(b []byte, agent string) (*eventv1.Event, bool) {
	var ev eventv1.Event
	if err := proto.Unmarshal(b, &ev); err != nil {
		return nil, false
	}
	return &ev, canonical.ValidateFields(&ev) == nil && ev.GetId() != "" && ev.GetSource().GetAgent() == agent
}

// TestEventValidAcceptsEveryPayload: events as proto.Marshal writes them take the fast
// path, whatever their payload; otherwise the leader would decode them after all.
func TestEventValidAcceptsEveryPayload(t *testing.T) {
	for _, ev := range wireEvents() {
		if err := canonical.ValidateFields(ev); err != nil {
			t.Fatalf("%s: test event invalid: %v", ev.Type, err)
		}
		for range 5 { // map order varies
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if !EventValid(b, wireAgent) {
				t.Fatalf("%s: EventValid refused a valid event", ev.Type)
			}
		}
	}
}

// TestEventValidRefuses: every rule canonical.ValidateFields enforces, every leader check, and the
// encodings it leaves to the slow path.
func TestEventValidRefuses(t *testing.T) {
	mutations := map[string]func(ev *eventv1.Event){
		"no id":            func(ev *eventv1.Event) { ev.Id = "" },
		"long id":          func(ev *eventv1.Event) { ev.Id = strings.Repeat("i", canonical.MaxIDLen+1) },
		"wrong type":       func(ev *eventv1.Event) { ev.Type = canonical.TypePrice },
		"no type":          func(ev *eventv1.Event) { ev.Type = "" },
		"no payload":       func(ev *eventv1.Event) { ev.Payload = nil },
		"other agent":      func(ev *eventv1.Event) { ev.Source.Agent = "agent-8" },
		"no source":        func(ev *eventv1.Event) { ev.Source = nil },
		"bad key name":     func(ev *eventv1.Event) { ev.Keys["Sku"] = "x" },
		"long key name":    func(ev *eventv1.Event) { ev.Keys["k"+strings.Repeat("x", canonical.MaxKeyLen)] = "x" },
		"empty key value":  func(ev *eventv1.Event) { ev.Keys["a"] = "" },
		"long key value":   func(ev *eventv1.Event) { ev.Keys["a"] = strings.Repeat("v", canonical.MaxValueLen+1) },
		"NUL in key value": func(ev *eventv1.Event) { ev.Keys["a"] = "x\x00y" },
		"too many keys": func(ev *eventv1.Event) {
			for i := range canonical.MaxKeys {
				ev.Keys["k"+strings.Repeat("x", i)] = "v"
			}
		},
		"no on hand":  func(ev *eventv1.Event) { ev.GetInventoryLevel().OnHand = "" },
		"bad on hand": func(ev *eventv1.Event) { ev.GetInventoryLevel().OnHand = "1e3" },
		"bad alloc":   func(ev *eventv1.Event) { ev.GetInventoryLevel().Allocated = "1." },
		"bad avail":   func(ev *eventv1.Event) { ev.GetInventoryLevel().Available = "x" },
		"no location": func(ev *eventv1.Event) { ev.GetInventoryLevel().Location = "" },
		"no inv sku":  func(ev *eventv1.Event) { ev.GetInventoryLevel().Sku = "" },
		"no item sku": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Item{Item: &eventv1.Item{Name: "n"}}
			ev.Type = canonical.TypeItem
		},
		"bad price": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Price{Price: &eventv1.Price{Sku: "s", Amount: "€1"}}
			ev.Type = canonical.TypePrice
		},
		"no order no": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Order{Order: &eventv1.Order{}}
			ev.Type = canonical.TypeOrder
		},
		"bad total": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "o", Total: "1,5"}}
			ev.Type = canonical.TypeOrder
		},
		"no line sku": func(ev *eventv1.Event) {
			ev.Payload = orderWithLine(&eventv1.OrderLine{Quantity: "1"})
			ev.Type = canonical.TypeOrder
		},
		"no line qty": func(ev *eventv1.Event) {
			ev.Payload = orderWithLine(&eventv1.OrderLine{Sku: "s"})
			ev.Type = canonical.TypeOrder
		},
		"bad unit": func(ev *eventv1.Event) {
			ev.Payload = orderWithLine(&eventv1.OrderLine{Sku: "s", Quantity: "1", UnitPrice: "-"})
			ev.Type = canonical.TypeOrder
		},
		"no ack no": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{}}
			ev.Type = canonical.TypeOrderAck
		},
		"no ship no": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{}}
			ev.Type = canonical.TypeShipment
		},
		"ship line qty": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "s", Lines: []*eventv1.ShipmentLine{{Sku: "s"}}}}
			ev.Type = canonical.TypeShipment
		},
		"no invoice no": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{}}
			ev.Type = canonical.TypeInvoice
		},
		"bad inv total": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "i", Total: "x"}}
			ev.Type = canonical.TypeInvoice
		},
		"no return no": func(ev *eventv1.Event) {
			ev.Payload = &eventv1.Event_SalesReturn{SalesReturn: &eventv1.SalesReturn{}}
			ev.Type = canonical.TypeSalesReturn
		},
	}
	for name, mutate := range mutations {
		ev := proto.Clone(wireEvents()[1]).(*eventv1.Event) // inventory level
		mutate(ev)
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := slowValid(b, wireAgent); ok {
			t.Fatalf("%s: the slow path accepts it; the mutation is wrong", name)
		}
		if EventValid(b, wireAgent) {
			t.Fatalf("%s: EventValid accepted an invalid event", name)
		}
	}
	// Valid events in encodings the fast path leaves to the slow one.
	valid, err := proto.Marshal(wireEvents()[0])
	if err != nil {
		t.Fatal(err)
	}
	unknown := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), valid...), 30, protowire.VarintType), 1)
	idTwice := protowire.AppendString(protowire.AppendTag(append([]byte(nil), valid...), 1, protowire.BytesType), "other")
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff")
	for name, b := range map[string][]byte{"unknown field": unknown, "id twice": idTwice, "invalid UTF-8": append(badUTF8, valid...)} {
		if EventValid(b, wireAgent) {
			t.Fatalf("%s: EventValid vouched for an unusual encoding", name)
		}
	}
}

func orderWithLine(l *eventv1.OrderLine) *eventv1.Event_Order {
	return &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "o", Lines: []*eventv1.OrderLine{l}}}
}

// fastPathMax is the highest field number EventValid checks in place, for the payload
// messages that the orders model enriched; an event using a higher one (partner, parties,
// dates, ack lines, packages, invoice lines, ...) goes to the slow path, which is fine
// for documents far rarer than inventory levels.
var fastPathMax = map[protoreflect.FullName]protoreflect.FieldNumber{
	"crossdock.event.v1.Order": 7, "crossdock.event.v1.OrderLine": 4, "crossdock.event.v1.OrderAck": 4,
	"crossdock.event.v1.Shipment": 7, "crossdock.event.v1.ShipmentLine": 2, "crossdock.event.v1.Invoice": 4,
	"crossdock.event.v1.SalesReturn": 4,
}

// beyondFastPath reports whether m, or a message in it, sets a field above fastPathMax.
func beyondFastPath(m protoreflect.Message) bool {
	beyond := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if max, ok := fastPathMax[m.Descriptor().FullName()]; ok && fd.Number() > max {
			beyond = true
		} else if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
			if fd.IsList() {
				for i := range v.List().Len() {
					beyond = beyond || beyondFastPath(v.List().Get(i).Message())
				}
			} else {
				beyond = beyondFastPath(v.Message())
			}
		}
		return !beyond
	})
	return beyond
}

// FuzzEventValid: whatever the bytes, EventValid accepts only what the slow path accepts,
// and whatever the slow path accepts, once encoded by proto.Marshal, EventValid accepts.
func FuzzEventValid(f *testing.F) {
	for _, ev := range wireEvents() {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, ok := slowValid(b, wireAgent)
		if EventValid(b, wireAgent) && !ok {
			t.Fatalf("EventValid accepted %x, which the slow path refuses", b)
		}
		if !ok {
			return
		}
		var ev eventv1.Event // without unknown fields, which EventValid leaves to the slow path
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		if beyondFastPath(ev.ProtoReflect()) {
			return // the orders model's fields are checked by the slow path only
		}
		re, err := proto.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if !EventValid(re, wireAgent) {
			t.Fatalf("EventValid refused %x, a valid event as proto.Marshal writes it", re)
		}
	})
}

func BenchmarkEventValid(b *testing.B) {
	ev, err := proto.Marshal(wireEvents()[1])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !EventValid(ev, wireAgent) {
			b.Fatal("refused")
		}
	}
}
