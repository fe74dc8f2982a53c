package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/demo/sample"
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
		if len(req.GetBatch().GetEvents()) != 0 {
			t.Fatalf("the codec decoded a plain batch")
		}
		if _, ok := fastBatch(agent, rawEvents(req.GetBatch()), new(next)); !ok {
			t.Fatalf("next %d: a plain batch of valid events does not take the fast path", next)
		}
		n := next
		in, err := validateBatch(agent, req.GetBatch(), &n)
		if err != nil {
			t.Fatal(err)
		}
		if in.payload == nil || in.cmd != nil {
			t.Fatalf("next %d: no raw payload for a plain batch", next)
		}
		cmd, last := slowCommand(t, data, agent, next)
		if want := 20 - int(max(next, 10)-10); len(cmd.GetEvents()) != want || n != last+1 || in.last != last {
			t.Fatalf("next %d: %d events up to %d (next %d), want %d up to %d", next, len(cmd.GetEvents()), in.last, n, want, last)
		}
		var got storev1.IngestBatch
		if err := proto.Unmarshal(in.payload, &got); err != nil {
			t.Fatalf("next %d: payload does not decode: %v", next, err)
		}
		if !proto.Equal(&got, cmd) {
			t.Fatalf("next %d: payload decodes to\n%v\nwant\n%v", next, &got, cmd)
		}
	}
}

// slowCommand is the command the leader builds from data decoded by plain proto (no raw
// bytes, every event decoded and validated), and its last agent seq.
func slowCommand(t testing.TB, data []byte, agent string, next uint64) (*storev1.IngestBatch, uint64) {
	t.Helper()
	var req uplinkv1.StreamRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		t.Fatal(err)
	}
	in, err := validateBatch(agent, req.GetBatch(), &next)
	if err != nil || in == nil || in.payload != nil {
		t.Fatalf("slow path: %v, %v", in, err)
	}
	return in.cmd, in.last
}

// TestInvalidEventGetsItsError: an invalid event in a plain batch leaves the fast path
// and is refused with the slow path's words, naming the event and the field.
func TestInvalidEventGetsItsError(t *testing.T) {
	const agent = "agent-1"
	req := testBatch(agent, 3)
	req.GetBatch().GetEvents()[1].GetEvent().GetInventoryLevel().OnHand = "12,5"
	data, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got uplinkv1.StreamRequest
	if err := (UplinkCodec{}).Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	in, err := validateBatch(agent, got.GetBatch(), &next)
	if err == nil || !strings.Contains(err.Error(), "events[1] (seq 11)") || !strings.Contains(err.Error(), "onHand") {
		t.Fatalf("validateBatch = %v, %v; want the error of events[1]", in, err)
	}
	// Malformed events: a decode error.
	bad := protowire.AppendTag(nil, 2, protowire.BytesType)
	bad = protowire.AppendBytes(bad, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0x12, 0x05, 'x'}))
	if err := (UplinkCodec{}).Unmarshal(bad, &got); err != nil {
		t.Fatal(err)
	}
	if _, err := validateBatch(agent, got.GetBatch(), &next); err == nil || !strings.Contains(err.Error(), "decode batch") {
		t.Fatalf("malformed batch: err = %v", err)
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
		in, err := validateBatch(agent, req.GetBatch(), &next)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if in.payload != nil {
			t.Fatalf("%s: raw payload kept", name)
		}
		if len(in.cmd.GetEvents()) == 0 {
			t.Fatalf("%s: no events", name)
		}
	}
	// Decoded by plain proto: nothing kept either.
	var req uplinkv1.StreamRequest
	if err := proto.Unmarshal(plain, &req); err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	if in, err := validateBatch(agent, req.GetBatch(), &next); err != nil || in.payload != nil {
		t.Fatalf("plain proto decode: payload %v, err %v", in.payload != nil, err)
	}
}

// FuzzUplinkCodec: whatever the bytes, the uplink codec and validateBatch (fast path,
// or slow path with the bytes as sent) accept exactly what plain proto decoding and the
// slow path accept, and build a command that decodes to the same one, with the same
// stream cursor.
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
		var ref uplinkv1.StreamRequest
		refErr := proto.Unmarshal(data, &ref)
		var req uplinkv1.StreamRequest
		err := (UplinkCodec{}).Unmarshal(data, &req)
		if refErr != nil {
			if err == nil && req.GetBatch() == nil {
				t.Fatalf("the codec accepted what proto refuses: %v", refErr)
			}
			if err == nil {
				// A plain batch is decoded later: validateBatch must refuse it.
				n := next
				if _, err := validateBatch(agent, req.GetBatch(), &n); err == nil {
					t.Fatalf("validateBatch accepted a batch proto refuses: %v", refErr)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("the codec refused what proto accepts: %v", err)
		}
		if ref.GetBatch() == nil {
			return
		}
		refNext, n := next, next
		want, wantErr := validateBatch(agent, ref.GetBatch(), &refNext)
		got, gotErr := validateBatch(agent, req.GetBatch(), &n)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("validateBatch: %v, slow path: %v", gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		if (want == nil) != (got == nil) || n != refNext {
			t.Fatalf("validateBatch: %v (next %d), slow path: %v (next %d)", got, n, want, refNext)
		}
		if got == nil {
			return
		}
		cmd := got.cmd
		if got.payload != nil {
			cmd = &storev1.IngestBatch{}
			if err := proto.Unmarshal(got.payload, cmd); err != nil {
				t.Fatalf("payload does not decode: %v", err)
			}
		}
		if !proto.Equal(cmd, want.cmd) || got.last != want.last {
			t.Fatalf("command\n%v (last %d)\nwant\n%v (last %d)", cmd, got.last, want.cmd, want.last)
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
			in, err := validateBatch(agent, got.GetBatch(), &next)
			payload := in != nil && in.payload != nil
			if payload != (codec == "uplink" && extra == 0) {
				t.Fatalf("%s codec, +%d: raw payload %v", codec, extra, payload)
			}
			if (err != nil) != (extra > 0) {
				t.Fatalf("%s codec, event of MaxEventBytes+%d: err = %v", codec, extra, err)
			}
		}
	}
}
