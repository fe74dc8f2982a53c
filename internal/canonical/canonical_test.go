package canonical

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func level(onHand string) *eventv1.Event {
	return &eventv1.Event{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "A-1", Location: "WH1", OnHand: onHand}}}
}

func TestNormalizeAndValidate(t *testing.T) {
	ev := level("12.50")
	ev.Keys = map[string]string{"sku": "OVERRIDE"}
	Normalize(ev)
	if ev.Type != TypeInventoryLevel || ev.Keys["location"] != "WH1" || ev.Keys["sku"] != "OVERRIDE" {
		t.Fatalf("normalize: type %q keys %v (explicit keys must win)", ev.Type, ev.Keys)
	}
	if err := Validate(ev); err != nil {
		t.Fatalf("valid event refused: %v", err)
	}
	for name, tc := range map[string]struct {
		ev   *eventv1.Event
		want string
	}{
		"no payload":    {&eventv1.Event{Type: "item"}, "payload"},
		"type mismatch": {func() *eventv1.Event { e := level("1"); e.Type = "order"; return e }(), "type"},
		"float-ish":     {func() *eventv1.Event { e := level("1e3"); Normalize(e); return e }(), "onHand"},
		"bad key name":  {func() *eventv1.Event { e := level("1"); Normalize(e); e.Keys["Bad Key"] = "x"; return e }(), "lower_snake_case"},
		"empty value":   {func() *eventv1.Event { e := level("1"); Normalize(e); e.Keys["po"] = ""; return e }(), "keys.po"},
		"order line": {&eventv1.Event{Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
			OrderNumber: "SO-1", Lines: []*eventv1.OrderLine{{Sku: "A", Quantity: "x"}}}}}, "order.lines[0].quantity"},
	} {
		err := Validate(tc.ev)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an ErrInvalid naming %q", name, err, tc.want)
		}
	}
}

func TestIDsAreDeterministic(t *testing.T) {
	if ID("a", "c", "p1") != ID("a", "c", "p1") {
		t.Fatal("same inputs gave different ids")
	}
	// Ids are stored and compared across versions: they must never change. These were
	// computed by the first implementation (sha256 over the parts, each followed by a
	// NUL byte; "ev_" and the first 16 bytes in hex).
	for _, c := range []struct{ agent, connector, position, want string }{
		{"agent-1", "erp", "lsn:0/16B3748#3", "ev_051298b71d2e97eea18be817462ee245"},
		{"", "", "", "ev_709e80c88487a2411e1ee4dfb9f22a86"},
		{"a", "c", strings.Repeat("p", 300), "ev_f2f9d9afa65fa6be0575b57b4e60c75c"},
	} {
		if got := ID(c.agent, c.connector, c.position); got != c.want {
			t.Fatalf("ID(%q, %q, %.20q...) = %s, want %s", c.agent, c.connector, c.position, got, c.want)
		}
	}
	// The separator keeps ("ab","c") and ("a","bc") apart.
	if ID("ab", "c", "p") == ID("a", "bc", "p") || ID("a", "c", "p1") == ID("a", "c", "p2") {
		t.Fatal("different inputs gave the same id")
	}
	a, b := level("5"), level("5")
	b.Id, b.Source = "ev_other", &eventv1.Source{Agent: "x", Position: "y"}
	pa, err := ContentPosition(a)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := ContentPosition(b)
	if pa != pb {
		t.Fatal("content position depends on id or source")
	}
	pc, _ := ContentPosition(level("6"))
	if pa == pc {
		t.Fatal("different content gave the same position")
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "erp-east", "node_1.dc2", strings.Repeat("x", 64)} {
		if !ValidName(ok) {
			t.Errorf("ValidName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "Upper", "sp ace", "a/b", strings.Repeat("x", 65), "é"} {
		if ValidName(bad) {
			t.Errorf("ValidName(%q) = true", bad)
		}
	}
}

// FuzzMatchers holds the hand-written key name and decimal checks to the regular
// expressions they replace.
func FuzzMatchers(f *testing.F) {
	keyName := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	decimal := regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	for _, s := range []string{"", "sku", "sku_2", "Sku", "2sku", "a-b", "_a", "12", "-12.50", "1.", ".5", "-", "--1", "1.2.3", "0.0", "1e5", "１"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := IsKeyName(s), keyName.MatchString(s); got != want {
			t.Fatalf("IsKeyName(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := IsDecimal(s), decimal.MatchString(s); got != want {
			t.Fatalf("IsDecimal(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
