package canonical

import (
	"testing"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestContentPositionIgnoresTrace: the same change published in two traces has the
// same position, so the same id, and is committed once.
func TestContentPositionIgnoresTrace(t *testing.T) {
	ev := func(tp string) *eventv1.Event {
		return &eventv1.Event{Type: TypeInventoryLevel, Keys: map[string]string{"sku": "A"},
			Trace:   &eventv1.TraceContext{Traceparent: tp},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "A", Location: "L", OnHand: "1"}}}
	}
	a, err := ContentPosition(ev("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ContentPosition(ev("00-11111111111111111111111111111111-2222222222222222-01"))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("positions differ with the trace context: %s vs %s", a, b)
	}
}
