package ledger

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// FuzzParseIngestBatch holds parseIngestBatch to proto.Unmarshal: whenever the payload
// decodes as an IngestBatch, the parser sees the same agent and incarnation, the same events in the
// same order, and the same agent seq, id, type and keys for each, and each raw element
// decodes to the same AgentEvent.
func FuzzParseIngestBatch(f *testing.F) {
	b := &storev1.IngestBatch{AgentId: "a1", Incarnation: 3}
	for _, ae := range []*storev1.AgentEvent{
		agentEvent(1, "e1", "sku", "S1", "location", "WH1"),
		agentEvent(2, "e2"),
		{AgentSeq: 3},
		withType(agentEvent(4, strings.Repeat("x", 2000), "", "empty-name"), "price"),
	} {
		b.Events = append(b.Events, ae)
	}
	enc, err := proto.Marshal(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	// The same event field twice (merged), a map key twice (last wins), unknown fields.
	ev1, _ := proto.Marshal(agentEvent(0, "first", "sku", "A").GetEvent())
	ev2, _ := proto.Marshal(withType(agentEvent(0, "", "sku", "B", "bin", "7"), "item").GetEvent())
	var ae []byte
	ae = protowire.AppendTag(ae, 1, protowire.VarintType)
	ae = protowire.AppendVarint(ae, 9)
	ae = protowire.AppendTag(ae, 2, protowire.BytesType)
	ae = protowire.AppendBytes(ae, ev1)
	ae = protowire.AppendTag(ae, 99, protowire.Fixed64Type)
	ae = protowire.AppendFixed64(ae, 1)
	ae = protowire.AppendTag(ae, 2, protowire.BytesType)
	ae = protowire.AppendBytes(ae, ev2)
	var batch []byte
	batch = protowire.AppendTag(batch, 2, protowire.BytesType)
	batch = protowire.AppendBytes(batch, ae)
	batch = protowire.AppendTag(batch, 1, protowire.BytesType)
	batch = protowire.AppendBytes(batch, []byte("agent-x"))
	f.Add(batch)
	f.Add([]byte{0x12, 0x02, 0x08})       // truncated varint inside an event
	f.Add([]byte{0x0a, 0x01, 0xff})       // agent id not UTF-8
	f.Add([]byte{0x12, 0x03, 0x08, 0x01}) // element longer than the payload

	f.Fuzz(func(t *testing.T, data []byte) {
		hdr, evs, perr := parseIngestBatch(data)
		agent := hdr.agent
		var want storev1.IngestBatch
		if err := proto.Unmarshal(data, &want); err != nil {
			return // the parser may accept more (it skips the payload) but never less
		}
		if perr != nil {
			t.Fatalf("proto.Unmarshal accepts the payload, parseIngestBatch: %v", perr)
		}
		if hdr.incarnation != want.GetIncarnation() {
			t.Fatalf("incarnation %d, want %d", hdr.incarnation, want.GetIncarnation())
		}
		if agent != want.GetAgentId() || len(evs) != len(want.GetEvents()) {
			t.Fatalf("agent %q with %d events, want %q with %d", agent, len(evs), want.GetAgentId(), len(want.GetEvents()))
		}
		for i, ie := range evs {
			w := want.GetEvents()[i]
			if ie.agentSeq != w.GetAgentSeq() || ie.id != w.GetEvent().GetId() || ie.typ != w.GetEvent().GetType() {
				t.Fatalf("event %d: seq %d id %q type %q, want %d %q %q", i, ie.agentSeq, ie.id, ie.typ,
					w.GetAgentSeq(), w.GetEvent().GetId(), w.GetEvent().GetType())
			}
			if len(ie.keys) != len(w.GetEvent().GetKeys()) {
				t.Fatalf("event %d: keys %v, want %v", i, ie.keys, w.GetEvent().GetKeys())
			}
			for _, e := range ie.keys {
				if v, ok := w.GetEvent().GetKeys()[e.name]; !ok || v != e.value {
					t.Fatalf("event %d: keys %v, want %v", i, ie.keys, w.GetEvent().GetKeys())
				}
			}
			var got storev1.AgentEvent
			if err := proto.Unmarshal(ie.raw, &got); err != nil || !proto.Equal(&got, w) {
				t.Fatalf("event %d: raw bytes decode to %v (%v), want %v", i, &got, err, w)
			}
			names := make([]string, 0, len(ie.keys))
			for _, e := range indexedKeys(slices.Clone(ie.keys)) {
				names = append(names, e.name)
			}
			if !slices.IsSorted(names) {
				t.Fatalf("indexed keys not in name order: %v", names)
			}
		}
	})
}
