package wire

import "google.golang.org/protobuf/encoding/protowire"

// ScanFields calls fn for each field of an encoded message: v is the value of a
// length-delimited field, x of a varint one.
func ScanFields(p []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(p) > 0 {
		var (
			num protowire.Number
			typ protowire.Type
			n   int
		)
		// One-byte tags, lengths and varints (nearly all of them) are read inline.
		if b := p[0]; b < 0x80 && b>>3 != 0 {
			num, typ, n = protowire.Number(b>>3), protowire.Type(b&7), 1
		} else if num, typ, n = protowire.ConsumeTag(p); n < 0 {
			return protowire.ParseError(n)
		}
		p = p[n:]
		var (
			v []byte
			x uint64
		)
		switch {
		case typ == protowire.BytesType && len(p) > 0 && p[0] < 0x80:
			if l := int(p[0]); l < len(p) {
				v, n = p[1:1+l], 1+l
			} else {
				_, n = protowire.ConsumeBytes(p)
			}
		case typ == protowire.BytesType:
			v, n = protowire.ConsumeBytes(p)
		case typ == protowire.VarintType && len(p) > 0 && p[0] < 0x80:
			x, n = uint64(p[0]), 1
		case typ == protowire.VarintType:
			x, n = protowire.ConsumeVarint(p)
		default:
			n = protowire.ConsumeFieldValue(num, typ, p)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		p = p[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
