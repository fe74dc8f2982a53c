package orders

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// FuzzEventType: the view's look at an event's type agrees with a full decode of any
// encoding that decodes, and never panics on one that does not.
func FuzzEventType(f *testing.F) {
	for _, ev := range []*eventv1.Event{
		{Type: "order", Id: "x", Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "o"}}},
		{Id: "y", Keys: map[string]string{"order": "o"}, Type: "order.ack"},
		{},
	} {
		b, _ := proto.Marshal(ev)
		f.Add(b)
	}
	f.Add([]byte{0x12, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := eventType(b)
		var ev eventv1.Event
		if proto.Unmarshal(b, &ev) != nil {
			return
		}
		// The last occurrence of field 2 wins in a full decode; the view reads the first,
		// which is the only one an encoder writes.
		if got != ev.GetType() && countType(b) <= 1 {
			t.Fatalf("eventType %q, decoded type %q", got, ev.GetType())
		}
	})
}

func countType(b []byte) int {
	n := 0
	for len(b) > 0 {
		num, typ, l := consumeTag(b)
		if l < 0 {
			return n
		}
		b = b[l:]
		if num == 2 {
			n++
		}
		l = consumeValue(num, typ, b)
		if l < 0 {
			return n
		}
		b = b[l:]
	}
	return n
}

var (
	consumeTag   = protowire.ConsumeTag
	consumeValue = protowire.ConsumeFieldValue
)
