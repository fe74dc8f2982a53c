package routing

import "testing"

// Selects applies match and filter like Evaluate and never runs the mapping: a mapping
// that fails on an event does not change whether the route takes it.
func TestSelects(t *testing.T) {
	r := route(t, `  match: {types: [inventory.level]}
  filter: event.inventory_level.location == "main"
  mapping: '{"q": 100 / int(event.inventory_level.available)}'`)
	for _, c := range []struct {
		sku, loc, avail string
		want            bool
	}{{"A", "main", "0", true}, {"A", "main", "5", true}, {"A", "side", "5", false}} {
		ce := level(c.sku, c.loc, c.avail)
		got, err := r.Selects(ce)
		if err != nil || got != c.want {
			t.Errorf("Selects(%s at %s, %s) = %v, %v; want %v", c.sku, c.loc, c.avail, got, err, c.want)
		}
		if m, _, _ := r.Evaluate(ce); m != got {
			t.Errorf("Evaluate matched %v, Selects %v", m, got)
		}
	}
	other := level("A", "main", "5")
	other.Event.Type = "price"
	if got, err := r.Selects(other); got || err != nil {
		t.Errorf("another type: Selects = %v, %v", got, err)
	}
}
