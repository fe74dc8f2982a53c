package wire

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// FuzzDecodeCommand: DecodeCommand accepts exactly what proto.Unmarshal accepts and
// decodes it to the same Command, its payload sharing the entry's bytes when the
// encoding is the usual one.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []*storev1.Command{
		{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: []byte("payload"), ProposedAtUnixNano: 1_700_000_000_000_000_000},
		{Type: 99, Ignorable: true, ProposedAtUnixNano: -5},
		{},
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		var want, got storev1.Command
		werr := proto.Unmarshal(data, &want)
		gerr := DecodeCommand(data, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("DecodeCommand: %v, proto.Unmarshal: %v", gerr, werr)
		}
		if werr == nil && !proto.Equal(&got, &want) {
			t.Fatalf("DecodeCommand gave %v, proto.Unmarshal %v", &got, &want)
		}
	})
}

func TestDecodeCommandAliasesPayload(t *testing.T) {
	data, err := proto.Marshal(&storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	var cmd storev1.Command
	if err := DecodeCommand(data, &cmd); err != nil {
		t.Fatal(err)
	}
	if &cmd.Payload[0] != &data[len(data)-3] || cap(cmd.Payload) != 3 {
		t.Fatal("payload was copied, or may be appended over the entry's bytes")
	}
}
