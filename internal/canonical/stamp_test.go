package canonical

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestStamp: one way of preparing an event for publish and connectors alike.
func TestStamp(t *testing.T) {
	t0 := timestamppb.New(time.Unix(1_700_000_000, 0))
	calls := 0
	now := func() *timestamppb.Timestamp { calls++; return t0 }
	level := func(onHand string) *eventv1.Event {
		return &eventv1.Event{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "S", Location: "L", OnHand: onHand}}}
	}

	ev := level("5")
	ev.Source = &eventv1.Source{Agent: "someone-else", Connector: "x"}
	if err := Stamp(ev, "a1", "erp", now); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "inventory.level" || ev.Keys["sku"] != "S" || ev.Source.Agent != "a1" || ev.Source.Connector != "erp" ||
		!ev.OccurredAt.AsTime().Equal(t0.AsTime()) || calls != 1 {
		t.Fatalf("stamped = %v (now called %d times)", ev, calls)
	}
	// The time was set before the content was hashed: the position covers it.
	c := level("5")
	c.Source = &eventv1.Source{}
	c.OccurredAt = t0
	Normalize(c)
	if pos, _ := ContentPosition(c); ev.Source.Position != pos || ev.Id != ID("a1", "erp", pos) {
		t.Fatalf("position %q id %q; want the content hash %q with the time, and the id from it", ev.Source.Position, ev.Id, pos)
	}

	// A caller's position and id are kept; the id derives from a given position.
	withPos := level("5")
	withPos.Source = &eventv1.Source{Position: "row-42"}
	if err := Stamp(withPos, "a1", "erp", now); err != nil || withPos.Id != ID("a1", "erp", "row-42") {
		t.Fatalf("with a position: %v, id %q", err, withPos.Id)
	}
	withID := level("5")
	withID.Id = "mine-1"
	if err := Stamp(withID, "a1", "erp", now); err != nil || withID.Id != "mine-1" {
		t.Fatalf("with an id: %v, id %q", err, withID.Id)
	}
	if err := Stamp(level("five"), "a1", "erp", now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid event: %v", err)
	}
}
