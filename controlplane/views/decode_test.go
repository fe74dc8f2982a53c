package views

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestFieldNumbers pins the numbers decode.go reads to the descriptors.
func TestFieldNumbers(t *testing.T) {
	for _, c := range []struct {
		msg  proto.Message
		name protoreflect.Name
		num  int
	}{
		{&eventv1.Event{}, "type", int(fieldEventType)},
		{&eventv1.Event{}, "occurred_at", int(fieldEventOccurredAt)},
		{&eventv1.Event{}, "item", int(fieldPayloadItem)},
		{&eventv1.Event{}, "inventory_level", int(fieldPayloadLevel)},
		{&eventv1.Event{}, "price", int(fieldPayloadPrice)},
		{&eventv1.Event{}, "sales_return", 17},
		{&eventv1.Price{}, "valid_from", int(fieldPriceValidFrom)},
		{&eventv1.Price{}, "valid_to", int(fieldPriceValidTo)},
		{&eventv1.Price{}, "sku", 1}, {&eventv1.Price{}, "price_list", 2}, {&eventv1.Price{}, "currency", 3}, {&eventv1.Price{}, "amount", 4},
		{&eventv1.InventoryLevel{}, "sku", 1}, {&eventv1.InventoryLevel{}, "location", 2}, {&eventv1.InventoryLevel{}, "on_hand", 3},
		{&eventv1.InventoryLevel{}, "allocated", 4}, {&eventv1.InventoryLevel{}, "available", 5}, {&eventv1.InventoryLevel{}, "unit_of_measure", 6},
		{&eventv1.Item{}, "sku", 1}, {&eventv1.Item{}, "name", 2}, {&eventv1.Item{}, "description", 3}, {&eventv1.Item{}, "unit_of_measure", 4}, {&eventv1.Item{}, "gtin", 5},
	} {
		fd := c.msg.ProtoReflect().Descriptor().Fields().ByName(c.name)
		if fd == nil || int(fd.Number()) != c.num {
			t.Errorf("%s.%s: field %v, decode.go reads %d", c.msg.ProtoReflect().Descriptor().Name(), c.name, fd, c.num)
		}
	}
}

// FuzzDecodeEvent holds decodeEvent to proto.Unmarshal: for every input proto accepts,
// decodeEvent reads the same view fields (and skips the same events).
func FuzzDecodeEvent(f *testing.F) {
	t1 := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
	for _, ev := range []*eventv1.Event{
		lvl("A", "WH1", "3", t1), prc("A", "retail", "1.5", t1, t1.Add(time.Hour)), itm("A", "n"), order("1"),
		{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "x", Location: "y"}}},
		{Type: "order", Payload: &eventv1.Event_Price{Price: &eventv1.Price{Sku: "x", ValidTo: &timestamppb.Timestamp{Seconds: -5, Nanos: -3}}}},
	} {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, b...)) // merged occurrences
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var rv rawView
		err := decodeEvent(b, &rv)
		ev := &eventv1.Event{}
		if proto.Unmarshal(b, ev) != nil {
			return
		}
		if err != nil {
			t.Fatalf("decodeEvent: %v; proto.Unmarshal accepts %x", err, b)
		}
		var kind int
		str := [7]string{}
		var from, to *timestamppb.Timestamp
		switch p := ev.GetPayload().(type) {
		case *eventv1.Event_InventoryLevel:
			l := p.InventoryLevel
			kind, str = int(fieldPayloadLevel), [7]string{"", l.GetSku(), l.GetLocation(), l.GetOnHand(), l.GetAllocated(), l.GetAvailable(), l.GetUnitOfMeasure()}
		case *eventv1.Event_Price:
			pr := p.Price
			kind, str = int(fieldPayloadPrice), [7]string{"", pr.GetSku(), pr.GetPriceList(), pr.GetCurrency(), pr.GetAmount()}
			from, to = pr.GetValidFrom(), pr.GetValidTo()
		case *eventv1.Event_Item:
			it := p.Item
			kind, str = int(fieldPayloadItem), [7]string{"", it.GetSku(), it.GetName(), it.GetDescription(), it.GetUnitOfMeasure(), it.GetGtin()}
		}
		if ev.GetType() != "" && !viewType([]byte(ev.GetType())) {
			kind = 0
		}
		if int(rv.kind) != kind {
			t.Fatalf("kind %d, proto says %d (type %q, payload %T)", rv.kind, kind, ev.GetType(), ev.GetPayload())
		}
		if kind == 0 {
			return
		}
		for i := 1; i <= 6; i++ {
			if string(rv.str[i]) != str[i] {
				t.Fatalf("field %d = %q, proto says %q", i, rv.str[i], str[i])
			}
		}
		nanos := func(t *timestamppb.Timestamp) int64 {
			if t == nil {
				return 0
			}
			return toNanos(time.Unix(t.GetSeconds(), int64(t.GetNanos())))
		}
		if rv.occurred != nanos(ev.GetOccurredAt()) || rv.from != nanos(from) || rv.to != nanos(to) {
			t.Fatalf("times %d %d %d, proto says %d %d %d", rv.occurred, rv.from, rv.to, nanos(ev.GetOccurredAt()), nanos(from), nanos(to))
		}
	})
}
