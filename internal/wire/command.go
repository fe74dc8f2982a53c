package wire

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// DecodeCommand decodes a raft entry's Command like proto.Unmarshal, except that the
// payload aliases data instead of being copied: an ingest batch is ~150 KB, copied on
// every replica only to be read once. The ledger keeps no part of a payload past Apply
// (it copies the events it stores), and raft does not change an entry's Data. Anything
// but the usual encoding (known fields with their wire types) is left to proto.Unmarshal.
func DecodeCommand(data []byte, cmd *storev1.Command) error {
	for p := data; len(p) > 0; {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return proto.Unmarshal(data, cmd)
		}
		p = p[n:]
		switch {
		case num == CommandPayload && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(p)
			if m < 0 {
				return proto.Unmarshal(data, cmd)
			}
			cmd.Payload = v[:len(v):len(v)]
			p = p[m:]
		case (num == CommandType || num == CommandIgnorable || num == CommandProposedAtUnixNano) && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return proto.Unmarshal(data, cmd)
			}
			switch num {
			case CommandType:
				cmd.Type = storev1.CommandType(int32(x))
			case CommandIgnorable:
				cmd.Ignorable = protowire.DecodeBool(x)
			case CommandProposedAtUnixNano:
				cmd.ProposedAtUnixNano = int64(x)
			}
			p = p[m:]
		default:
			return proto.Unmarshal(data, cmd) // resets cmd first
		}
	}
	return nil
}
