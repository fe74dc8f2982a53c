package partner

import (
	"context"
	"math/big"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/canonical"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// catalog is a fixed set of items and levels: the fuzzer exercises the decoding and
// validation of SubmitOrder, not the views (tested with real views elsewhere).
type catalog struct{}

func (catalog) Seq() uint64                           { return 1 }
func (catalog) WaitFor(context.Context, uint64) error { return nil }
func (catalog) Levels(skus []string, _ []string) []Level {
	var out []Level
	for _, s := range skus {
		if s == "A-1" {
			out = append(out, Level{SKU: s, Location: "WH-1", Available: "10"})
		}
	}
	return out
}
func (catalog) Prices([]string, string) []PriceEntry { return nil }
func (catalog) Items(string, int, func(string) bool) ([]ItemEntry, string) {
	return nil, ""
}
func (catalog) Item(sku string) (ItemEntry, bool) {
	return ItemEntry{SKU: sku}, sku == "A-1" || sku == "A-2"
}

// FuzzSubmitOrder decodes SubmitOrder bodies as Connect does (JSON, and the binary
// form) and validates them as the handler does: never a panic, every violation names a
// field, and an order that passes is a canonical order event within the limits.
func FuzzSubmitOrder(f *testing.F) {
	for _, s := range []string{
		`{"purchaseOrderNumber":"PO-1","lines":[{"sku":"A-1","quantity":"2"}]}`,
		`{"purchaseOrderNumber":"PO-2","currency":"EUR","location":"WH-1","lines":[{"lineNumber":"10","sku":"A-2","quantity":"1.5","unitPrice":"9.90"}],"shipTo":{"name":"A","country":"FR"}}`,
		`{"purchaseOrderNumber":"","lines":[]}`, `{"lines":[{"sku":"A-1","quantity":"-1"}]}`, `{}`, `[]`, `null`,
		`{"purchase_order_number":"PO-3","lines":[{"sku":"A-1","quantity":"11"}]}`,
		`{"purchaseOrderNumber":"PO-4","orderDate":"2026-01-02T03:04:05Z","lines":[{"sku":"A-1","quantity":"1","gtin":"4006381333931"}]}`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{Views: catalog{}}
	p := &Partner{Name: "p", Spec: &routing.PartnerSpec{SKUs: []string{"A-*"}, Locations: []string{"WH-1"}, Orders: &routing.PartnerOrdersSpec{CheckAvailability: true}},
		Limits: routing.EffectiveLimits(&routing.TierSpec{MaxItemsPerCall: 10}, nil)}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true} // Connect's JSON codec
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, dec := range []func([]byte, *partnerv1.SubmitOrderRequest) error{
			func(b []byte, m *partnerv1.SubmitOrderRequest) error { return opts.Unmarshal(b, m) },
			func(b []byte, m *partnerv1.SubmitOrderRequest) error { return proto.Unmarshal(b, m) },
		} {
			var m partnerv1.SubmitOrderRequest
			if dec(body, &m) != nil {
				continue
			}
			v := s.validateOrder(&m, p)
			checkViolations(t, v)
			if len(v) > 0 {
				continue
			}
			ev := orderEvent(p.Name, &m)
			canonicalViolations(&v, canonical.Validate(ev))
			checkViolations(t, v)
			if len(v) > 0 {
				continue
			}
			o := ev.GetOrder()
			if ev.GetId() != canonical.OrderEventID("p", m.GetPurchaseOrderNumber()) || o.GetOrderNumber() != canonical.OrderID("p", m.GetPurchaseOrderNumber()) {
				t.Fatalf("accepted order has id %q number %q", ev.GetId(), o.GetOrderNumber())
			}
			if n := len(o.GetLines()); n < 1 || n > 10 || m.GetPurchaseOrderNumber() == "" || len(m.GetPurchaseOrderNumber()) > maxPOLength {
				t.Fatalf("accepted %d lines, purchase order number %q", n, m.GetPurchaseOrderNumber())
			}
			for _, l := range o.GetLines() {
				q, ok := positive(l.GetQuantity())
				if !ok || !strings.HasPrefix(l.GetSku(), "A-") || l.GetSku() == "A-1" && q.Cmp(bigTen) > 0 {
					t.Fatalf("accepted line %v", l)
				}
			}
		}
	})
}

var bigTen, _ = new(big.Rat).SetString("10")
