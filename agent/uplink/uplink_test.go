package uplink

import (
	"testing"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// TestRawOutboxEvent checks that an outbox entry sent without decoding reaches the
// control plane as the same OutboxEvent a decoded one would be.
func TestRawOutboxEvent(t *testing.T) {
	ev := &eventv1.Event{
		Id: "a1/erp/42", Type: "inventory.level", Keys: map[string]string{"sku": "S1", "location": "WH1"},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "S1", Location: "WH1", OnHand: "7"}},
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	oe, err := rawOutboxEvent(42, data)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := proto.Marshal(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Batch{Batch: &uplinkv1.Batch{Events: []*uplinkv1.OutboxEvent{oe}}}})
	if err != nil {
		t.Fatal(err)
	}
	var got uplinkv1.StreamRequest
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	want := &uplinkv1.OutboxEvent{Seq: 42, Event: ev}
	if g := got.GetBatch().GetEvents(); len(g) != 1 || !proto.Equal(g[0], want) || len(g[0].ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("received %v, want %v", g, want)
	}
	if _, err := rawOutboxEvent(1, []byte{0x0a, 0x05, 'x'}); err == nil {
		t.Fatal("a truncated entry was accepted")
	}
}
