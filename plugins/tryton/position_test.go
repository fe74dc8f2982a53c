package tryton

import (
	"strings"
	"testing"
	"time"
)

func TestPosition(t *testing.T) {
	p := position{Inventory: time.Date(2026, 11, 27, 5, 25, 50, 354155000, time.UTC), Sales: time.Unix(1, 0).UTC(), Shipments: time.Unix(2, 0).UTC()}
	s := p.String()
	if s != "v1;inv=1795757150354155;sale=1000000;ship=2000000" {
		t.Fatalf("String() = %q", s)
	}
	back, err := parsePosition(s)
	if err != nil || !back.Inventory.Equal(p.Inventory) || !back.Sales.Equal(p.Sales) || !back.Shipments.Equal(p.Shipments) {
		t.Fatalf("parse(%q) = %+v, %v", s, back, err)
	}
	// A position committed before shipments were read: they start at the beginning.
	if old, err := parsePosition("v1;inv=1;sale=1"); err != nil || !old.Shipments.IsZero() {
		t.Fatalf("parse of a position without ship= = %+v, %v", old, err)
	}
	if z, err := parsePosition(""); err != nil || !z.Inventory.IsZero() || !z.Sales.IsZero() {
		t.Fatalf("empty position = %+v, %v", z, err)
	}
	if z, _ := parsePosition(position{}.String()); !z.Inventory.IsZero() {
		t.Fatalf("zero position does not round-trip: %+v", z)
	}
	for in, want := range map[string]string{
		"v2;inv=1;sale=1":        "unknown version",
		"inv=1;sale=1":           "unknown version",
		"v1;inv=1":               "want both",
		"v1;inv=1;sale=1;inv=2":  "given twice",
		"v1;inv=1;sale=1;ship=x": "not a time",
		"v1;inv=x;sale=1":        "not a time",
		"v1;inv=-1;sale=1":       "not a time",
		"v1;inv=1;sale=1;lsn=3":  "unknown field",
		"v1;inv;sale=1":          "not name=value",
	} {
		if _, err := parsePosition(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q) error = %v, want %q", in, err, want)
		}
	}
}

// FuzzParsePosition: any accepted position re-encodes to one that parses to the same
// value.
func FuzzParsePosition(f *testing.F) {
	f.Add("v1;inv=1795757150354155;sale=0")
	f.Add("v1;inv=1;sale=2;ship=3")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePosition(s)
		if err != nil {
			return
		}
		q, err := parsePosition(p.String())
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", p.String(), err)
		}
		if !q.Inventory.Equal(p.Inventory) || !q.Sales.Equal(p.Sales) || !q.Shipments.Equal(p.Shipments) {
			t.Fatalf("round trip %q: %+v != %+v", s, p, q)
		}
	})
}
