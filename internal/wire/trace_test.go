package wire

import (
	"testing"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func TestReadEventHead(t *testing.T) {
	ev := &eventv1.Event{Id: "ev_1", Type: "inventory.level", Keys: map[string]string{"sku": "A"},
		Trace:   &eventv1.TraceContext{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Tracestate: "k=v"},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "A", Location: "L", OnHand: "1"}}}
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := ReadEventHead(b)
	if !ok || string(h.ID) != "ev_1" || string(h.Type) != "inventory.level" ||
		string(h.Traceparent) != ev.Trace.Traceparent || string(h.Tracestate) != "k=v" {
		t.Fatalf("ReadEventHead = %q %q %q %q, %v", h.ID, h.Type, h.Traceparent, h.Tracestate, ok)
	}
	if _, ok := ReadEventHead(b[:len(b)-1]); ok {
		t.Error("ReadEventHead accepted a cut encoding")
	}
}

// FuzzReadEventHead holds ReadEventHead to proto decoding: whatever decodes, it reads
// the same id, type and trace context.
func FuzzReadEventHead(f *testing.F) {
	for _, ev := range wireEvents() {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev eventv1.Event
		if proto.Unmarshal(b, &ev) != nil {
			_, _ = ReadEventHead(b) // must not panic
			return
		}
		h, ok := ReadEventHead(b)
		if !ok {
			t.Fatalf("ReadEventHead refused %x, which proto decodes", b)
		}
		if string(h.ID) != ev.GetId() || string(h.Type) != ev.GetType() ||
			string(h.Traceparent) != ev.GetTrace().GetTraceparent() || string(h.Tracestate) != ev.GetTrace().GetTracestate() {
			t.Fatalf("ReadEventHead(%x) = %q %q %q %q; proto: %q %q %q %q", b, h.ID, h.Type, h.Traceparent, h.Tracestate,
				ev.GetId(), ev.GetType(), ev.GetTrace().GetTraceparent(), ev.GetTrace().GetTracestate())
		}
	})
}
