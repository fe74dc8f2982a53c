package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/sample"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

func testBatch(agent string, n int) *uplinkv1.StreamRequest {
	gen := sample.NewInventory(1, sample.DefaultWarehouses, 50, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := &uplinkv1.Batch{}
	for i := range n {
		ev := gen.Next()
		ev.Id = fmt.Sprintf("ev-%d", i)
		ev.Source.Agent = agent
		b.Events = append(b.Events, &uplinkv1.OutboxEvent{Seq: uint64(10 + i), Event: ev})
	}
	return &uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Batch{Batch: b}}
}

// TestRawBatchPayload: a batch decoded by UplinkCodec becomes a raft payload built from
// the events' bytes as sent, which decodes to the same IngestBatch the leader would
// have encoded, also when the start of the batch was already sent (dropped).
func TestRawBatchPayload(t *testing.T) {
	const agent = "agent-1"
	data, err := proto.Marshal(testBatch(agent, 20))
	if err != nil {
		t.Fatal(err)
	}
	for _, next := range []uint64{0, 10, 15, 29} {
		var req uplinkv1.StreamRequest
		if err := (UplinkCodec{}).Unmarshal(data, &req); err != nil {
			t.Fatal(err)
		}
		n := next
		cmd, payload, err := validateBatch(agent, req.GetBatch(), &n)
		if err != nil {
			t.Fatal(err)
		}
		if payload == nil {
			t.Fatalf("next %d: no raw payload for a plain batch", next)
		}
		if want := 20 - int(max(next, 10)-10); len(cmd.GetEvents()) != want {
			t.Fatalf("next %d: %d events, want %d", next, len(cmd.GetEvents()), want)
		}
		var got storev1.IngestBatch
		if err := proto.Unmarshal(payload, &got); err != nil {
			t.Fatalf("next %d: payload does not decode: %v", next, err)
		}
		if !proto.Equal(&got, cmd) {
			t.Fatalf("next %d: payload decodes to\n%v\nwant\n%v", next, &got, cmd)
		}
	}
}

// TestRawBatchFallsBack: anything but a StreamRequest holding one batch of events only
// keeps no bytes, and the leader encodes the batch itself.
func TestRawBatchFallsBack(t *testing.T) {
	const agent = "agent-1"
	plain, err := proto.Marshal(testBatch(agent, 3))
	if err != nil {
		t.Fatal(err)
	}
	batchBytes := func() []byte {
		b, err := proto.Marshal(testBatch(agent, 3).GetBatch())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withUnknownInBatch := protowire.AppendTag(nil, 2, protowire.BytesType)
	withUnknownInBatch = protowire.AppendBytes(withUnknownInBatch, protowire.AppendVarint(protowire.AppendTag(batchBytes(), 9, protowire.VarintType), 1))
	withUnknownInEvent := testBatch(agent, 3)
	withUnknownInEvent.GetBatch().GetEvents()[1].ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1))
	unknownInEvent, err := proto.Marshal(withUnknownInEvent)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"unknown in event":  unknownInEvent,
		"batch twice":       append(append([]byte(nil), plain...), plain...),
		"unknown top field": protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), plain...), 9, protowire.VarintType), 7),
		"unknown in batch":  withUnknownInBatch,
	} {
		var req uplinkv1.StreamRequest
		if err := (UplinkCodec{}).Unmarshal(data, &req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		next := uint64(0)
		cmd, payload, err := validateBatch(agent, req.GetBatch(), &next)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if payload != nil {
			t.Fatalf("%s: raw payload kept", name)
		}
		if len(cmd.GetEvents()) == 0 {
			t.Fatalf("%s: no events", name)
		}
	}
	// Decoded by plain proto: nothing kept either.
	var req uplinkv1.StreamRequest
	if err := proto.Unmarshal(plain, &req); err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	if _, payload, err := validateBatch(agent, req.GetBatch(), &next); err != nil || payload != nil {
		t.Fatalf("plain proto decode: payload %v, err %v", payload != nil, err)
	}
}

// FuzzUplinkCodec: whatever the bytes, a raw payload, when there is one, decodes to
// exactly the command the leader would otherwise encode.
func FuzzUplinkCodec(f *testing.F) {
	const agent = "agent-1"
	for _, n := range []int{1, 4} {
		b, err := proto.Marshal(testBatch(agent, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(0))
		f.Add(b, uint64(11))
	}
	f.Fuzz(func(t *testing.T, data []byte, next uint64) {
		var req uplinkv1.StreamRequest
		if err := (UplinkCodec{}).Unmarshal(data, &req); err != nil || req.GetBatch() == nil {
			return
		}
		cmd, payload, err := validateBatch(agent, req.GetBatch(), &next)
		if err != nil || payload == nil {
			return
		}
		var got storev1.IngestBatch
		if err := proto.Unmarshal(payload, &got); err != nil {
			t.Fatalf("payload does not decode: %v", err)
		}
		if !proto.Equal(&got, cmd) {
			t.Fatalf("payload decodes to\n%v\nwant\n%v", &got, cmd)
		}
	})
}

// TestSizeCheckedAsSent: the leader refuses an event over canonical.MaxEventBytes and
// accepts one at the limit, the same whether it measures the bytes the agent sent or
// encodes the event itself.
func TestSizeCheckedAsSent(t *testing.T) {
	const agent = "agent-1"
	for _, extra := range []int{0, 1} {
		req := testBatch(agent, 2)
		ev := req.GetBatch().GetEvents()[1].GetEvent()
		ev.GetInventoryLevel().UnitOfMeasure = ""
		for proto.Size(ev) < canonical.MaxEventBytes+extra {
			ev.GetInventoryLevel().UnitOfMeasure += strings.Repeat("x", max(1, (canonical.MaxEventBytes+extra-proto.Size(ev))/2))
		}
		if got := proto.Size(ev); got != canonical.MaxEventBytes+extra {
			t.Fatalf("built an event of %d bytes, want %d", got, canonical.MaxEventBytes+extra)
		}
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, codec := range []string{"uplink", "plain"} {
			var got uplinkv1.StreamRequest
			if codec == "uplink" {
				err = (UplinkCodec{}).Unmarshal(data, &got)
			} else {
				err = proto.Unmarshal(data, &got)
			}
			if err != nil {
				t.Fatal(err)
			}
			next := uint64(0)
			_, payload, err := validateBatch(agent, got.GetBatch(), &next)
			if (payload != nil) != (codec == "uplink" && extra == 0) {
				t.Fatalf("%s codec, +%d: raw payload %v", codec, extra, payload != nil)
			}
			if (err != nil) != (extra > 0) {
				t.Fatalf("%s codec, event of MaxEventBytes+%d: err = %v", codec, extra, err)
			}
		}
	}
}
