package wire

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// fill sets every field of m to a random value through protobuf reflection, recursing
// into messages; member picks the member of each oneof to set (by index, modulo).
// Anything the schema holds that fill does not know how to set fails the test, so a
// new kind of field is noticed here too.
func fill(t *testing.T, r *rand.Rand, m protoreflect.Message, member int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && o.Fields().Get(member%o.Fields().Len()) != fd {
			continue
		}
		str := func() string {
			s := []string{"", "a", "SKU-1", "ünïcode ✓", string(make([]byte, 200))}[r.IntN(5)]
			if r.IntN(3) == 0 {
				s = fmt.Sprint(r.Uint64())
			}
			return s
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range r.IntN(4) {
				mp.Set(protoreflect.ValueOfString(str()).MapKey(), protoreflect.ValueOfString(str()))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range r.IntN(4) {
				if fd.Kind() == protoreflect.StringKind {
					l.Append(protoreflect.ValueOfString(str()))
					continue
				}
				e := l.NewElement()
				fill(t, r, e.Message(), member)
				l.Append(e)
			}
		case fd.Kind() == protoreflect.MessageKind:
			if r.IntN(5) > 0 || fd.ContainingOneof() != nil {
				fill(t, r, m.Mutable(fd).Message(), member)
			}
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(str()))
		case fd.Kind() == protoreflect.Uint64Kind:
			m.Set(fd, protoreflect.ValueOfUint64([]uint64{0, 1, 1 << 40, 1<<64 - 1}[r.IntN(4)]))
		case fd.Kind() == protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64([]int64{0, 1, -1, 1 << 40, -1 << 62}[r.IntN(5)]))
		case fd.Kind() == protoreflect.Int32Kind:
			m.Set(fd, protoreflect.ValueOfInt32([]int32{0, 1, -1, 999999999, -5}[r.IntN(5)]))
		default:
			t.Fatalf("fill does not know field %s of kind %s", fd.FullName(), fd.Kind())
		}
	}
}

// TestAppendEventEveryField: events with every field set (each payload in turn, random
// values including empty ones, unknown fields at several depths) encode to bytes that
// decode to the same event, of proto.Size's length, and a batch in one buffer splits
// back into its events.
func TestAppendEventEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	oneofLen := (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload").Fields().Len()
	var buf []byte
	var evs []*eventv1.Event
	var ends []int
	for i := range 400 {
		ev := &eventv1.Event{}
		fill(t, r, ev.ProtoReflect(), i%oneofLen)
		if i%7 == 0 {
			unk := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), uint64(i))
			ev.ProtoReflect().SetUnknown(unk)
			if s := ev.GetSource(); s != nil {
				s.ProtoReflect().SetUnknown(unk)
			}
		}
		got := AppendEvent(nil, ev)
		if len(got) != proto.Size(ev) {
			t.Fatalf("event %d: %d bytes, proto.Size says %d", i, len(got), proto.Size(ev))
		}
		var back eventv1.Event
		if err := proto.Unmarshal(got, &back); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if !proto.Equal(&back, ev) {
			t.Fatalf("event %d decodes to\n%v\nwant\n%v", i, &back, ev)
		}
		buf = AppendEvent(buf, ev)
		evs, ends = append(evs, ev), append(ends, len(buf))
	}
	start := 0
	for i, end := range ends {
		var back eventv1.Event
		if err := proto.Unmarshal(buf[start:end], &back); err != nil || !proto.Equal(&back, evs[i]) {
			t.Fatalf("event %d of the shared buffer: %v", i, err)
		}
		start = end
	}
	// A oneof set to a nil message encodes as the empty message, like proto.Marshal.
	ev := &eventv1.Event{Id: "x", Payload: &eventv1.Event_Item{}}
	want, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendEvent(nil, ev); string(got) != string(want) {
		t.Fatalf("nil payload message: %x, want %x", got, want)
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	ev := wireEvents()[1]
	b.Run("AppendEvent", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendEvent(buf[:0], ev)
		}
	})
	b.Run("proto.Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := proto.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestAppendEventEdiInterchange: an edi.interchange event with groups, sets and times
// encodes byte for byte as proto.Marshal does and decodes back equal; EventValid leaves
// it to the slow path.
func TestAppendEventEdiInterchange(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 4, 10, 30, 0, 5, time.UTC))
	ev := &eventv1.Event{Id: "edi:bigbox:out:000000101:1a2b", Type: "edi.interchange",
		Keys: map[string]string{"order": "ord_0123"}, Source: &eventv1.Source{Agent: "a1", Connector: "edi"},
		Payload: &eventv1.Event_EdiInterchange{EdiInterchange: &eventv1.EdiInterchange{
			Partner: "bigbox", Direction: "out", Control: "000000101", File: "bigbox-855-000000101.x12",
			Status: "sent", At: at, Ta1: "A",
			Groups: []*eventv1.EdiGroup{
				{FunctionalId: "PR", Control: "102", Version: "004010", Ack: "A", AckKind: "997", AckAt: at, AckDue: at,
					Sets: []*eventv1.EdiSet{{Id: "855", Control: "0001", PurchaseOrderNumber: "PO1", Order: "ord_0123", Status: "A", Event: "e1"}}},
				{FunctionalId: "SH", Control: "103", Sets: []*eventv1.EdiSet{{Id: "856"}, {Id: "856", Control: "0002"}}},
			},
		}}}
	got := AppendEvent(nil, ev)
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendEvent\n%x\nproto.Marshal\n%x", got, want)
	}
	var back eventv1.Event
	if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, ev) {
		t.Fatalf("decodes to %v (%v), want %v", &back, err, ev)
	}
	if EventValid(got, "a1") {
		t.Fatal("EventValid vouched for an edi.interchange event; it must leave it to the slow path")
	}
}

// TestAppendCommittedEvent: what AppendCommittedEvent writes decodes to the
// CommittedEvent it describes, equal to one proto.Marshal wrote (times with and without
// nanoseconds, before 1970, no agent or agent seq).
func TestAppendCommittedEvent(t *testing.T) {
	ev := &eventv1.Event{Id: "ev_1", Type: "inventory.level", Keys: map[string]string{"sku": "A", "location": "WH1"},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "A", Location: "WH1", OnHand: "3"}}}
	raw := AppendEvent(nil, ev)
	for _, c := range []struct {
		seq, agentSeq uint64
		at            time.Time
		agent         string
	}{
		{7, 3, time.Date(2026, 12, 6, 6, 0, 0, 123, time.UTC), "agt_1"},
		{1 << 40, 0, time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC), ""},
		{1, 1, time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC), "a"},
		{2, 2, time.Unix(0, 0), "b"},
	} {
		b := AppendCommittedEvent([]byte("prefix"), c.seq, raw, c.at, c.agent, c.agentSeq)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatal("AppendCommittedEvent did not append")
		}
		var got eventv1.CommittedEvent
		if err := proto.Unmarshal(b[len("prefix"):], &got); err != nil {
			t.Fatal(err)
		}
		want := &eventv1.CommittedEvent{Seq: c.seq, Event: ev, CommittedAt: timestamppb.New(c.at), Agent: c.agent, AgentSeq: c.agentSeq}
		if !proto.Equal(&got, want) {
			t.Fatalf("decoded %v, want %v", &got, want)
		}
		if wb, err := (proto.MarshalOptions{Deterministic: true}).Marshal(want); err != nil || proto.Size(&got) != len(wb) {
			t.Fatalf("decoded size %d, proto.Marshal writes %d (%v)", proto.Size(&got), len(wb), err)
		}
	}
}
