package routing

import (
	"errors"
	"os"
	"testing"
)

// BenchmarkEvaluate measures one route evaluation per event (match, filter, mapping,
// JSON encoding): the router's CPU cost per delivered event.
func BenchmarkEvaluate(b *testing.B) {
	src, err := os.ReadFile("testdata/marketplace.yaml")
	if err != nil {
		b.Fatal(err)
	}
	docs, err := Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	tab, err := NewTable(docs, nil)
	if err != nil {
		b.Fatal(err)
	}
	mapped, _ := tab.Route("marketplace-inventory")
	plain := route(b, "  match: {types: [inventory.level]}")
	ce := level("ABC-1", "main", "12")
	for _, bc := range []struct {
		name string
		r    *Route
	}{{"mapping", mapped}, {"canonical-json", plain}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, _, err := bc.r.Evaluate(ce)
				if err != nil || !m {
					b.Fatal(m, err)
				}
			}
		})
	}
	// The worst a mapping can cost: evaluation up to the cost limit.
	b.Run("cost-limit-breach", func(b *testing.B) {
		r := route(b, "  mapping: '[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e)))))'")
		for b.Loop() {
			if _, _, err := r.Evaluate(ce); !errors.Is(err, ErrCostLimit) {
				b.Fatal(err)
			}
		}
	})
	b.Run("no-match", func(b *testing.B) {
		other := level("XYZ-1", "main", "12")
		for b.Loop() {
			if m, _, _ := mapped.Evaluate(other); m {
				b.Fatal("matched")
			}
		}
	})
}
