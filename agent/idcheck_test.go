package agent

import (
	"fmt"
	"hash/maphash"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/wire"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestContentPrint: the fingerprint covers type, keys and payload, in any key order,
// and not the id, time, source or trace.
func TestContentPrint(t *testing.T) {
	ev := func(onHand string, mod func(*eventv1.Event)) []byte {
		e := &eventv1.Event{
			Id: "x", Type: "inventory.level", Keys: map[string]string{"sku": "S", "location": "L", "bin": "7", "zone": "z"},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "S", Location: "L", OnHand: onHand}},
		}
		if mod != nil {
			mod(e)
		}
		return wire.AppendEvent(nil, e)
	}
	base := contentPrint(ev("1", nil))
	for i := range 20 { // map order varies from encoding to encoding
		if contentPrint(ev("1", nil)) != base {
			t.Fatalf("encoding %d of the same event has another fingerprint", i)
		}
	}
	same := func(e *eventv1.Event) {
		e.Id, e.OccurredAt = "y", timestamppb.Now()
		e.Source = &eventv1.Source{Agent: "a", Connector: "c", Position: "p"}
		e.Trace = &eventv1.TraceContext{Traceparent: "t"}
	}
	if contentPrint(ev("1", same)) != base {
		t.Fatal("id, time, source or trace changed the fingerprint")
	}
	for name, mod := range map[string]func(*eventv1.Event){
		"payload": func(e *eventv1.Event) { e.GetInventoryLevel().OnHand = "2" },
		"key":     func(e *eventv1.Event) { e.Keys["bin"] = "8" },
		"type":    func(e *eventv1.Event) { e.Type = "other" },
	} {
		if contentPrint(ev("1", mod)) == base {
			t.Errorf("a different %s has the same fingerprint", name)
		}
	}
}

// TestRecentIDs: the newest ids are kept, the oldest forgotten, and an id is found only
// under its own hash and name.
func TestRecentIDs(t *testing.T) {
	c := newRecentIDs(4)
	var ids []string
	var hs, ps []uint64
	for i := range 6 {
		id := fmt.Sprintf("id-%d", i)
		ids, hs, ps = append(ids, id), append(hs, maphash.String(printSeed, id)), append(ps, uint64(100+i))
	}
	c.addCall(ids, hs, ps, 10)
	for i, id := range ids {
		r, ok := c.lookup(id, hs[i])
		if want := i >= 2; ok != want || ok && (r.print != ps[i] || r.seq != uint64(10+i)) {
			t.Errorf("%s: %+v, %v; want kept %v", id, r, ok, want)
		}
	}
	if _, ok := c.lookup("impostor", hs[5]); ok {
		t.Error("another id under the same hash was taken for it")
	}
	// The same id again updates its entry in place.
	c.addCall(ids[5:], hs[5:], []uint64{7}, 99)
	if r, ok := c.lookup(ids[5], hs[5]); !ok || r.print != 7 || r.seq != 99 {
		t.Errorf("updated entry = %+v, %v", r, ok)
	}
	if len(c.m) != 4 {
		t.Errorf("%d entries, want 4", len(c.m))
	}
}
