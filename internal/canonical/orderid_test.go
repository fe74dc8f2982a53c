package canonical

import (
	"strings"
	"testing"
)

func TestOrderIDStableAndDistinct(t *testing.T) {
	a := OrderID("acme", "PO-1")
	if a != OrderID("acme", "PO-1") {
		t.Fatal("OrderID is not deterministic")
	}
	if !strings.HasPrefix(a, "ord_") || len(a) != 24 {
		t.Fatalf("OrderID = %q, want ord_ and 20 hex digits", a)
	}
	// The separator keeps ("ab","c") and ("a","bc") apart.
	if OrderID("ab", "c") == OrderID("a", "bc") {
		t.Fatal("OrderID collides across the partner/po boundary")
	}
	if OrderID("acme", "PO-1") == OrderID("other", "PO-1") {
		t.Fatal("two partners' orders under one PO number share an id")
	}
}
