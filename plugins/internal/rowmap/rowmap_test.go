package rowmap

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func TestInventoryLevel(t *testing.T) {
	m, err := New("tables[0].mapping", Config{
		Type:       "inventory.level",
		Fields:     map[string]string{"sku": "item_code", "location": "warehouse", "on_hand": "qty", "allocated": "alloc", "available": "avail"},
		Values:     map[string]string{"unit_of_measure": "EA"},
		OccurredAt: "updated_at",
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 3, 1, 10, 0, 0, 5000, time.UTC)
	ev, err := m.Build(map[string]any{
		"item_code": "SKU-1", "warehouse": []byte("MAIN"), "qty": int64(42),
		"alloc": []byte("3.500"), "avail": 38.5, "updated_at": ts, "other": "ignored",
	})
	if err != nil {
		t.Fatal(err)
	}
	il := ev.GetInventoryLevel()
	if il.GetSku() != "SKU-1" || il.GetLocation() != "MAIN" || il.GetOnHand() != "42" ||
		il.GetAllocated() != "3.500" || il.GetAvailable() != "38.5" || il.GetUnitOfMeasure() != "EA" {
		t.Fatalf("payload = %v", il)
	}
	if ev.Type != "inventory.level" || ev.Keys["sku"] != "SKU-1" || ev.Keys["location"] != "MAIN" {
		t.Fatalf("type/keys = %q %v", ev.Type, ev.Keys)
	}
	if !ev.OccurredAt.AsTime().Equal(ts) {
		t.Fatalf("occurred_at = %v, want %v", ev.OccurredAt.AsTime(), ts)
	}
	if got := m.Columns(); strings.Join(got, ",") != "alloc,avail,item_code,qty,updated_at,warehouse" {
		t.Fatalf("columns = %v", got)
	}
}

func TestExplicitKeysAndTextTimestamp(t *testing.T) {
	m, err := New("m", Config{Type: "price",
		Fields:     map[string]string{"sku": "sku", "amount": "price", "currency": "cur", "price_list": "list"},
		Keys:       map[string]string{"sku": "sku", "price_list": "list"},
		OccurredAt: "changed"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := m.Build(map[string]any{"sku": "A", "price": "12.50", "cur": "EUR", "list": int64(7), "changed": "2026-03-01 10:00:00"})
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetPrice().GetAmount() != "12.50" || ev.Keys["price_list"] != "7" || len(ev.Keys) != 2 {
		t.Fatalf("event = %v", ev)
	}
	if want := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC); !ev.OccurredAt.AsTime().Equal(want) {
		t.Fatalf("occurred_at = %v", ev.OccurredAt.AsTime())
	}
}

func TestOrderLines(t *testing.T) {
	perRow, err := New("m", Config{Type: "order", Fields: map[string]string{
		"order_number": "no", "status": "st", "lines.sku": "sku", "lines.quantity": "q", "lines.line_number": "ln"}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := perRow.Build(map[string]any{"no": "SO-1", "st": "confirmed", "sku": "A", "q": int64(2), "ln": int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	o := ev.GetOrder()
	if o.GetOrderNumber() != "SO-1" || len(o.Lines) != 1 || o.Lines[0].GetSku() != "A" || o.Lines[0].GetQuantity() != "2" || o.Lines[0].GetLineNumber() != "1" {
		t.Fatalf("order = %v", o)
	}
	jsonCol, err := New("m", Config{Type: "order", Fields: map[string]string{"order_number": "no", "lines": "lines_json", "total": "total"}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = jsonCol.Build(map[string]any{"no": "SO-2", "total": "10.10",
		"lines_json": `[{"sku":"A","quantity":2,"unit_price":1.10},{"sku":"B","quantity":"7.9","unit_price":0.30}]`})
	if err != nil {
		t.Fatal(err)
	}
	o = ev.GetOrder()
	if len(o.Lines) != 2 || o.Lines[0].GetUnitPrice() != "1.10" || o.Lines[1].GetQuantity() != "7.9" || o.Lines[1].GetSku() != "B" {
		t.Fatalf("order = %v", o)
	}
	if _, err := jsonCol.Build(map[string]any{"no": "SO-3", "total": nil, "lines_json": `[{"sku":"A","qty":2}]`}); err == nil || !strings.Contains(err.Error(), "[0].qty: unknown line field") {
		t.Fatalf("bad line field: %v", err)
	}
	if _, err := New("m", Config{Type: "order", Fields: map[string]string{"order_number": "no", "lines": "j", "lines.sku": "s"}}); err == nil {
		t.Fatal("lines mapped both ways accepted")
	}
}

func TestShipmentTimestampField(t *testing.T) {
	m, err := New("m", Config{Type: "shipment", Fields: map[string]string{"shipment_number": "no", "shipped_at": "at"}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := m.Build(map[string]any{"no": "SH-1", "at": "2026-03-01T10:00:00+02:00"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.GetShipment().GetShippedAt().AsTime(); !got.Equal(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("shipped_at = %v", got)
	}
	if s, err := Field(ev, nil, "shipped_at"); err != nil || s != "2026-03-01T08:00:00Z" {
		t.Fatalf("Field(shipped_at) = %q, %v", s, err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := []struct {
		cfg   Config
		field string
		why   string
	}{
		{Config{Type: "stock", Fields: map[string]string{"sku": "a"}}, "t.m.type", "not an event type"},
		{Config{Type: "inventory.level"}, "t.m.fields", "required"},
		{Config{Type: "inventory.level", Fields: map[string]string{"sku": "a", "onhand": "q"}}, "t.m.fields.onhand", "unknown inventory.level field"},
		{Config{Type: "inventory.level", Fields: map[string]string{"sku": " "}}, "t.m.fields.sku", "column name is empty"},
		{Config{Type: "item", Fields: map[string]string{"lines.sku": "a"}}, "t.m.fields.lines.sku", "has no lines"},
		{Config{Type: "order", Fields: map[string]string{"lines.qty": "a"}}, "t.m.fields.lines.qty", "unknown order field"},
		{Config{Type: "inventory.level", Fields: map[string]string{"sku": "a"}, Values: map[string]string{"on_hand": "ten"}}, "t.m.values.on_hand", "not a decimal"},
		{Config{Type: "inventory.level", Fields: map[string]string{"sku": "a"}, Values: map[string]string{"sku": "x"}}, "t.m.values.sku", "also mapped"},
		{Config{Type: "inventory.level", Fields: map[string]string{"sku": "a"}, Keys: map[string]string{"Bad-Key": "a"}}, "t.m.keys.Bad-Key", "lower_snake_case"},
	}
	for _, c := range cases {
		_, err := New("t.m", c.cfg)
		var ce *sdk.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !strings.Contains(ce.Reason, c.why) {
			t.Errorf("%+v: got %v, want %s: ...%s...", c.cfg, err, c.field, c.why)
		}
	}
}

func TestBuildErrorsNameTheField(t *testing.T) {
	m, err := New("m", Config{Type: "inventory.level", Fields: map[string]string{"sku": "s", "location": "l", "on_hand": "q"}, OccurredAt: "ts"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		row  map[string]any
		want string
	}{
		{map[string]any{"s": "A", "l": "M", "ts": nil}, `on_hand: column "q" is not in the row`},
		{map[string]any{"s": "A", "l": "M", "q": "12,5", "ts": nil}, `on_hand (column "q"): "12,5" is not a decimal number`},
		{map[string]any{"s": "A", "l": "M", "q": math.NaN(), "ts": nil}, `on_hand (column "q"): NaN is not a finite number`},
		{map[string]any{"s": "A", "l": "M", "q": "1e3", "ts": nil}, `not a decimal number`},
		{map[string]any{"s": "A", "l": "M", "q": int64(1), "ts": "yesterday"}, `occurred_at (column "ts"): "yesterday" is not a timestamp`},
		{map[string]any{"s": nil, "l": "M", "q": int64(1), "ts": nil}, `inventoryLevel.sku: required`},
		{map[string]any{"s": "A", "l": "M", "q": nil, "ts": nil}, `inventoryLevel.onHand`},
		{map[string]any{"s": struct{}{}, "l": "M", "q": int64(1), "ts": nil}, `sku (column "s"): cannot use struct {} as text`},
	}
	for _, c := range cases {
		_, err := m.Build(c.row)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want ...%s...", c.row, err, c.want)
		}
	}
}

func TestDecimalFormatting(t *testing.T) {
	cases := []struct {
		in   any
		want string
	}{
		{int64(-5), "-5"}, {uint64(math.MaxUint64), "18446744073709551615"}, {0.1, "0.1"},
		{float32(0.1), "0.1"}, {1e21, "1000000000000000000000"}, {math.Copysign(0, -1), "0"},
		{[]byte("123456789012345678901234.000001"), "123456789012345678901234.000001"}, {" 7 ", "7"},
	}
	for _, c := range cases {
		if got, err := Decimal(c.in); err != nil || got != c.want {
			t.Errorf("Decimal(%#v) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []any{"", "+1", "1.", ".5", "0x10", math.Inf(1), true} {
		if got, err := Decimal(bad); err == nil {
			t.Errorf("Decimal(%#v) = %q, want an error", bad, got)
		}
	}
}

func TestFieldForSinks(t *testing.T) {
	ev := &eventv1.Event{Id: "ev_1", Type: "order", Keys: map[string]string{"order": "SO-1"},
		Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "SO-1", Customer: "ACME",
			Lines: []*eventv1.OrderLine{{Sku: "A", Quantity: "2"}, {Sku: "B", Quantity: "3"}}}}}
	lines := Lines(ev)
	if len(lines) != 2 {
		t.Fatalf("lines = %d", len(lines))
	}
	for path, want := range map[string]string{"event_id": "ev_1", "type": "order", "keys.order": "SO-1", "customer": "ACME", "lines.sku": "B", "lines.quantity": "3", "occurred_at": ""} {
		if got, err := Field(ev, lines[1], path); err != nil || got != want {
			t.Errorf("Field(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	for _, path := range []string{"sku", "lines", "order_number.x"} {
		if _, err := Field(ev, lines[0], path); !errors.Is(err, ErrNoField) {
			t.Errorf("Field(%s) = %v, want ErrNoField", path, err)
		}
	}
	if _, err := Field(ev, nil, "lines.sku"); !errors.Is(err, ErrNoField) {
		t.Errorf("line field without a line: %v", err)
	}
}
