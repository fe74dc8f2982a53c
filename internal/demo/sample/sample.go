// Package sample generates distributor inventory changes: a few warehouses, a few
// thousand SKUs, stock going up and down. The demo, the tests and the benchmarks feed
// agents with it. Output is deterministic for a seed.
package sample

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// DefaultWarehouses are the demo's locations.
var DefaultWarehouses = []string{"WH-EAST", "WH-WEST", "WH-CENTRAL"}

// Inventory produces inventory level events.
type Inventory struct {
	warehouses []string
	skus       int
	rng        *rand.Rand
	clock      time.Time
	levels     map[string]int64 // sku@warehouse -> on hand
	n          uint64
}

// NewInventory returns a generator over skus SKUs in warehouses, starting its clock at
// start and advancing it a millisecond per event.
func NewInventory(seed uint64, warehouses []string, skus int, start time.Time) *Inventory {
	return &Inventory{
		warehouses: warehouses, skus: skus,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		clock:  start,
		levels: map[string]int64{},
	}
}

// SKU names the i-th SKU.
func SKU(i int) string { return fmt.Sprintf("SKU-%05d", i) }

// Next returns the next change: a random SKU at a random warehouse moves by a small
// amount, reported as its new absolute level.
func (g *Inventory) Next() *eventv1.Event {
	sku := SKU(g.rng.IntN(g.skus))
	wh := g.warehouses[g.rng.IntN(len(g.warehouses))]
	return g.level(sku, wh, g.rng.Int64N(41)-20)
}

// Snapshot returns one event per SKU and warehouse: the full stock picture.
func (g *Inventory) Snapshot() []*eventv1.Event {
	out := make([]*eventv1.Event, 0, g.skus*len(g.warehouses))
	for _, wh := range g.warehouses {
		for i := range g.skus {
			out = append(out, g.level(SKU(i), wh, 0))
		}
	}
	return out
}

func (g *Inventory) level(sku, wh string, delta int64) *eventv1.Event {
	k := sku + "@" + wh
	on, ok := g.levels[k]
	if !ok {
		on = 50 + g.rng.Int64N(500)
	}
	on = max(on+delta, 0)
	g.levels[k] = on
	alloc := min(on, g.rng.Int64N(20))
	g.n++
	g.clock = g.clock.Add(time.Millisecond)
	return &eventv1.Event{
		Type:       "inventory.level",
		Keys:       map[string]string{"sku": sku, "location": wh},
		OccurredAt: timestamppb.New(g.clock),
		Source:     &eventv1.Source{Position: "sample:" + strconv.FormatUint(g.n, 10)},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
			Sku: sku, Location: wh,
			OnHand:        strconv.FormatInt(on, 10),
			Allocated:     strconv.FormatInt(alloc, 10),
			Available:     strconv.FormatInt(on-alloc, 10),
			UnitOfMeasure: "EA",
		}},
	}
}

// Level returns the current on-hand quantity the generator last reported.
func (g *Inventory) Level(sku, warehouse string) (int64, bool) {
	v, ok := g.levels[sku+"@"+warehouse]
	return v, ok
}

// Pad grows ev to about size bytes of protobuf by filling its W3C tracestate, so load
// programs can send events of a fixed size. Events already that large are left alone.
func Pad(ev *eventv1.Event, size int) {
	n := proto.Size(ev)
	if n >= size {
		return
	}
	pad := size - n - 12 // field tags and lengths of the trace message
	if pad <= 0 {
		return
	}
	ev.Trace = &eventv1.TraceContext{Tracestate: "bench=" + strings.Repeat("x", pad)}
}
