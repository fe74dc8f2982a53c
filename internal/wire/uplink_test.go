package wire

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

type entry struct {
	Seq  uint64
	Data []byte
}

// TestRawBatch checks that outbox entries sent without decoding reach the control
// plane as the same batch decoded events would make.
func TestRawBatch(t *testing.T) {
	var entries []entry
	var want []*uplinkv1.OutboxEvent
	for i, seq := range []uint64{1, 127, 128, 1 << 40} {
		ev := &eventv1.Event{
			Id: fmt.Sprintf("a1/erp/%d", i), Type: "inventory.level", Keys: map[string]string{"sku": "S1", "location": "WH1"},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "S1", Location: "WH1", OnHand: strings.Repeat("7", i*100+1)}},
		}
		data, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{Seq: seq, Data: data})
		want = append(want, &uplinkv1.OutboxEvent{Seq: seq, Event: ev})
	}
	req, err := rawBatch(entries)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got uplinkv1.StreamRequest
	if err := proto.Unmarshal(enc, &got); err != nil {
		t.Fatal(err)
	}
	g := got.GetBatch().GetEvents()
	if len(g) != len(want) || len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("received %v, want %v", g, want)
	}
	for i := range want {
		if !proto.Equal(g[i], want[i]) || len(g[i].ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("event %d: received %v, want %v", i, g[i], want[i])
		}
	}
	if _, err := rawBatch([]entry{{Seq: 1, Data: []byte{0x0a, 0x05, 'x'}}}); err == nil {
		t.Fatal("a truncated entry was accepted")
	}
}

// rawBatch is the request of entries, in a buffer of its own.
func rawBatch(entries []entry) (*uplinkv1.StreamRequest, error) {
	var w BatchWriter
	w.Reset()
	for _, e := range entries {
		if err := w.Add(e.Seq, e.Data); err != nil {
			return nil, err
		}
	}
	req := &uplinkv1.StreamRequest{}
	req.ProtoReflect().SetUnknown(w.Request())
	return req, nil
}
