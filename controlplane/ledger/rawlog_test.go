package ledger

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestScanRaw reads the log from several seqs, in bounded pages, across chunks and
// entries, and checks every event's seq, commit time and bytes against ListEvents.
func TestScanRaw(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	seq := uint64(0)
	for e := range 4 {
		var evs []*storev1.AgentEvent
		for range 300 { // more than a chunk
			seq++
			evs = append(evs, agentEvent(seq, id("a1", int(seq)), "sku", fmt.Sprint(seq%7)))
		}
		wantResult(t, lg.ingest(l, "a1", evs...), seq, uint32(len(evs)), 0, seq)
		_ = e
	}
	all, _, err := l.ListEvents(Filter{}, 1, 2000)
	if err != nil || len(all) != 1200 {
		t.Fatalf("ListEvents: %d events, %v", len(all), err)
	}
	for _, from := range []uint64{0, 1, 255, 256, 257, 299, 300, 301, 1199, 1200, 1201, 5000} {
		for _, page := range []int{0, 1, 7, 256, 1000} {
			next := max(from, 1)
			var got []RawEvent
			for {
				n, err := l.ScanRaw(next, page, func(ev RawEvent) error {
					got = append(got, RawEvent{Seq: ev.Seq, CommittedAt: ev.CommittedAt, Event: append([]byte(nil), ev.Event...), AgentSeq: ev.AgentSeq})
					return nil
				})
				if err != nil {
					t.Fatalf("ScanRaw(%d, %d): %v", next, page, err)
				}
				if n == next {
					break
				}
				next = n
			}
			want := all[min(max(from, 1)-1, 1200):]
			if len(got) != len(want) {
				t.Fatalf("from %d page %d: %d events, want %d", from, page, len(got), len(want))
			}
			for i, w := range want {
				ev := &eventv1.Event{}
				if err := proto.Unmarshal(got[i].Event, ev); err != nil {
					t.Fatal(err)
				}
				if got[i].Seq != w.GetSeq() || !got[i].CommittedAt.Equal(w.GetCommittedAt().AsTime()) || !proto.Equal(ev, w.GetEvent()) {
					t.Fatalf("from %d page %d: event %d = seq %d at %v %v, want %v", from, page, i, got[i].Seq, got[i].CommittedAt, ev, w)
				}
			}
		}
	}
}

// FuzzWalkChunk holds walkChunk to proto.Unmarshal of the chunk: the same events, seqs,
// commit time and event content.
func FuzzWalkChunk(f *testing.F) {
	c := &storev1.LogChunk{FirstSeq: 7, Agent: "a1", CommittedAt: timestamppb.New(t0), Events: []*storev1.AgentEvent{agentEvent(1, "e1", "sku", "S"), agentEvent(2, "e2")}}
	b, err := proto.Marshal(c)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, uint64(0))
	f.Add(b, uint64(8))
	f.Add(append(b, b...), uint64(0))
	f.Fuzz(func(t *testing.T, v []byte, from uint64) {
		var all storev1.LogChunk
		if proto.Unmarshal(v, &all) != nil || len(all.GetEvents()) > chunkMaxEvents {
			return // walkChunk may or may not notice: it decodes less
		}
		first := all.GetFirstSeq()
		if first > 1<<62 {
			return
		}
		var got []RawEvent
		n, stop, err := walkChunk(first, v, from, 0, false, func(ev RawEvent) error {
			got = append(got, RawEvent{Seq: ev.Seq, CommittedAt: ev.CommittedAt, Event: append([]byte(nil), ev.Event...), AgentSeq: ev.AgentSeq})
			return nil
		})
		if err != nil || stop || n != len(got) {
			t.Fatalf("walkChunk = %d, %v, %v on a chunk that decodes", n, stop, err)
		}
		var want []*storev1.AgentEvent
		for i, ae := range all.GetEvents() {
			if first+uint64(i) >= from {
				want = append(want, ae)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d events, want %d", len(got), len(want))
		}
		for i, ae := range want {
			ev := &eventv1.Event{}
			if err := proto.Unmarshal(got[i].Event, ev); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			wev := ae.GetEvent()
			if wev == nil {
				wev = &eventv1.Event{}
			}
			if !proto.Equal(ev, wev) || !got[i].CommittedAt.Equal(all.GetCommittedAt().AsTime()) || got[i].AgentSeq != ae.GetAgentSeq() {
				t.Fatalf("event %d = %v at %v agent seq %d, want %v at %v %d", i, ev, got[i].CommittedAt, got[i].AgentSeq, wev, all.GetCommittedAt().AsTime(), ae.GetAgentSeq())
			}
		}
	})
}

// FuzzRawEventType holds rawEventType to proto.Unmarshal of the Event: on bytes that
// decode, the same type (the last occurrence of field 2 as bytes; one of another wire
// type is an unknown field).
func FuzzRawEventType(f *testing.F) {
	ev := agentEvent(1, "e1", "sku", "S").GetEvent()
	b, err := proto.Marshal(ev)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add(append(b, protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "order.created")...))
	f.Add(append(b, protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 7)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := rawEventType(b)
		var ev eventv1.Event
		if proto.Unmarshal(b, &ev) != nil {
			return // rawEventType may or may not notice: it reads one field
		}
		if err != nil || got != ev.GetType() {
			t.Fatalf("rawEventType = %q, %v; proto.Unmarshal says %q", got, err, ev.GetType())
		}
	})
}

// FuzzPruneEvents holds pruneEvents (what a prune step reads of a chunk without
// decoding it) to proto.Unmarshal of the chunk: the same events, seqs, types, agent
// seqs, event content, agent and commit time.
func FuzzPruneEvents(f *testing.F) {
	c := &storev1.LogChunk{FirstSeq: 7, Agent: "a1", CommittedAt: timestamppb.New(t0), Events: []*storev1.AgentEvent{agentEvent(1, "e1", "sku", "S"), withType(agentEvent(2, "e2"), "order.created")}}
	b, err := proto.Marshal(c)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	c.Offsets = []uint32{0, 5}
	if b, err = proto.Marshal(c); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, v []byte) {
		var all storev1.LogChunk
		if proto.Unmarshal(v, &all) != nil || len(all.GetEvents()) > chunkMaxEvents || all.GetFirstSeq() > 1<<62 || checkOffsets(all.GetOffsets(), len(all.GetEvents())) != nil {
			return
		}
		got, err := pruneEvents(all.GetFirstSeq(), v)
		agent, aerr := chunkAgent(all.GetFirstSeq(), v)
		if err != nil || aerr != nil || len(got.evs) != len(all.GetEvents()) || agent != all.GetAgent() {
			t.Fatalf("pruneEvents = %d events, %v; chunkAgent = %q, %v; the chunk decodes to %d of %q", len(got.evs), err, agent, aerr, len(all.GetEvents()), all.GetAgent())
		}
		if len(got.evs) > 0 && !got.at.Equal(all.GetCommittedAt().AsTime()) {
			t.Fatalf("commit time %v, want %v", got.at, all.GetCommittedAt().AsTime())
		}
		for i, e := range got.evs {
			ae := all.GetEvents()[i]
			if e.seq != chunkSeq(&all, i) || e.typ != ae.GetEvent().GetType() || e.agentSeq != ae.GetAgentSeq() {
				t.Fatalf("event %d: seq %d type %q agent seq %d, want %d %q %d", i, e.seq, e.typ, e.agentSeq, chunkSeq(&all, i), ae.GetEvent().GetType(), ae.GetAgentSeq())
			}
			wev := ae.GetEvent()
			if wev == nil {
				wev = &eventv1.Event{}
			}
			var ev eventv1.Event
			if err := proto.Unmarshal(e.ev, &ev); err != nil || !proto.Equal(&ev, wev) {
				t.Fatalf("event %d: bytes decode to %v (%v), want %v", i, &ev, err, wev)
			}
		}
	})
}

// TestScanRawPastAPrunedTail: when retention removed every event after a reader's
// position, ScanRaw reads nothing but says to go on past the last seq, so a reader
// (the views) reaches the ledger's head instead of waiting at its old position for an
// event that will not come; stopped at maxEvents it says where it stopped.
func TestScanRawPastAPrunedTail(t *testing.T) {
	l := newLedger(t, false)
	k := newKeyLog(t)
	// Exactly two flush spans: a prune never passes the last flush, so this is where
	// the whole tail may go. The last event, 32768, is a level; 32767 an order.
	k.add(2*flushSeqs, 1024, skuKeys(40), l)
	last := l.LastSeq()
	k.prune(&storev1.PruneLedger{Types: []*storev1.PruneCutoff{{Type: "inventory.level", Below: last + 1}}, DefaultBelow: 1}, l)
	// Orders (every 7th event) are kept; after the last one the log holds nothing.
	held, _, err := l.ListEvents(Filter{}, 0, 1<<20)
	if err != nil || len(held) == 0 {
		t.Fatalf("held: %d, %v", len(held), err)
	}
	after := held[len(held)-1].GetSeq() + 1
	if after > last {
		t.Fatalf("the last event %d is held; want the tail pruned", after-1)
	}
	n := 0
	next, err := l.ScanRaw(after, 100, func(RawEvent) error { n++; return nil })
	if err != nil || n != 0 || next != last+1 {
		t.Fatalf("ScanRaw from %d after a pruned tail: %d events, next %d, %v; want none and next %d", after, n, next, err, last+1)
	}
	// Stopped by maxEvents: next is after the last event read, not the head.
	first := held[0].GetSeq()
	var seqs []uint64
	next, err = l.ScanRaw(first, 1, func(ev RawEvent) error { seqs = append(seqs, ev.Seq); return nil })
	if err != nil || len(seqs) == 0 || next != seqs[len(seqs)-1]+1 || next > last {
		t.Fatalf("ScanRaw stopped at maxEvents: read %v, next %d, %v", seqs, next, err)
	}
}
