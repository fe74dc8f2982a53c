package wire

import (
	"bytes"
	"github.com/crossdock/crossdock/internal/canonical"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// EventValid reports whether b, an encoded Event, is certainly accepted by the slow path:
// proto.Unmarshal decodes it, canonical.ValidateFields passes, its id is set and its source.agent
// is agent. It reads the encoding in place, without building the Event: the leader
// checks every event an agent sends, and decoding them was a fifth of its CPU.
//
// It only vouches for the usual encoding, the one proto.Marshal writes: known fields
// with their declared wire types, each singular field at most once, one payload, map
// entries with both key and value and distinct keys. For anything else (and for every
// invalid event) it returns false and the caller decodes the event and validates it,
// which gives the error, if any. FuzzEventValid holds it to the slow path.
func EventValid(b []byte, agent string) bool {
	var (
		seen          uint32
		typ, id, src  []byte
		payload       protowire.Number
		payloadFields wireMsg
		keys          [canonical.MaxKeys][]byte
		nkeys         int
	)
	for len(b) > 0 {
		num, wt, v, ok := wireField(&b)
		if !ok || num >= 32 || seen&(1<<num) != 0 && num != 3 {
			return false
		}
		seen |= 1 << num
		if wt != protowire.BytesType { // every field of Event is a string or a message
			return false
		}
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return false
			}
			id = v
		case 2:
			if !utf8.Valid(v) {
				return false
			}
			typ = v
		case 3:
			k, val, ok := wireMapEntry(v)
			if !ok || nkeys == canonical.MaxKeys || len(k) > canonical.MaxKeyLen || !canonical.IsKeyName(string(k)) ||
				len(val) == 0 || len(val) > canonical.MaxValueLen || bytes.IndexByte(val, 0) >= 0 {
				return false
			}
			for _, o := range keys[:nkeys] {
				if bytes.Equal(o, k) {
					return false
				}
			}
			keys[nkeys] = k
			nkeys++
		case 4:
			if !wireTimestamp(v) {
				return false
			}
		case 5:
			var m wireMsg
			if !m.strings(v, 3) {
				return false
			}
			src = m.str[1]
		case 6:
			var tc wireMsg
			if !tc.strings(v, 2) {
				return false
			}
		case 10, 11, 12, 13, 14, 15, 16, 17:
			if payload != 0 || !payloadFields.scanPayload(num, v) {
				return false
			}
			payload = num
		default:
			return false
		}
	}
	return len(id) > 0 && len(id) <= canonical.MaxIDLen && string(src) == agent && payload != 0 && string(typ) == payloadTypes[payload-10]
}

// payloadTypes names the type of each payload field, 10 to 17.
var payloadTypes = [...]string{canonical.TypeItem, canonical.TypeInventoryLevel, canonical.TypePrice, canonical.TypeOrder, canonical.TypeOrderAck, canonical.TypeShipment, canonical.TypeInvoice, canonical.TypeSalesReturn}

// wireField consumes one field of *b: its number, wire type and, for a length-delimited
// field, its value.
func wireField(b *[]byte) (protowire.Number, protowire.Type, []byte, bool) {
	p := *b
	// A one-byte tag and a one-byte length (nearly every field of an event) inline.
	if len(p) >= 2 && p[0] < 0x80 && p[0]>>3 != 0 && p[0]&7 == byte(protowire.BytesType) && p[1] < 0x80 {
		if l := int(p[1]); l <= len(p)-2 {
			*b = p[2+l:]
			return protowire.Number(p[0] >> 3), protowire.BytesType, p[2 : 2+l], true
		}
		return 0, 0, nil, false
	}
	num, wt, n := protowire.ConsumeTag(p)
	if n < 0 {
		return 0, 0, nil, false
	}
	p = p[n:]
	var v []byte
	if wt == protowire.BytesType {
		v, n = protowire.ConsumeBytes(p)
	} else {
		n = protowire.ConsumeFieldValue(num, wt, p)
	}
	if n < 0 {
		return 0, 0, nil, false
	}
	*b = p[n:]
	return num, wt, v, true
}

// wireMsg is a message of string fields 1 to n, read by scan.
type wireMsg struct {
	str  [8][]byte
	seen uint8
}

// scan reads a message whose fields 1..n are strings (each at most once, valid UTF-8),
// except the fields in repeated, which may repeat, and in message, at most once; their
// values go to check, which says whether each is valid. All fields are length-delimited.
func (m *wireMsg) scan(v []byte, n int, repeated, message uint8, check func(num protowire.Number, f []byte) bool) bool {
	for len(v) > 0 {
		num, wt, f, ok := wireField(&v)
		if !ok || num < 1 || int(num) > n || wt != protowire.BytesType {
			return false
		}
		bit := uint8(1) << num
		switch {
		case repeated&bit != 0:
			if !check(num, f) {
				return false
			}
			continue
		case m.seen&bit != 0:
			return false
		case message&bit != 0:
			if !check(num, f) {
				return false
			}
		case !utf8.Valid(f):
			return false
		}
		m.seen |= bit
		m.str[num] = f
	}
	return true
}

// strings reads a message of string fields 1..n only.
func (m *wireMsg) strings(v []byte, n int) bool { return m.scan(v, n, 0, 0, nil) }

// currency is an empty or ISO 4217-looking currency code, as canonical.IsCurrency.
func currency(s []byte) bool { return len(s) == 0 || canonical.IsCurrency(string(s)) }

func decimal(s []byte, required bool) bool {
	return !required && len(s) == 0 || canonical.IsDecimal(string(s))
}

// scanPayload reads payload field num and checks what canonical.ValidateFields checks of it.
func (m *wireMsg) scanPayload(num protowire.Number, v []byte) bool {
	switch num {
	case 10: // Item
		return m.strings(v, 5) && len(m.str[1]) > 0
	case 11: // InventoryLevel
		return m.strings(v, 6) && len(m.str[1]) > 0 && len(m.str[2]) > 0 &&
			decimal(m.str[3], true) && decimal(m.str[4], false) && decimal(m.str[5], false)
	case 12: // Price: valid_from = 5, valid_to = 6
		return m.scan(v, 6, 0, 1<<5|1<<6, func(_ protowire.Number, f []byte) bool {
			return wireTimestamp(f)
		}) && len(m.str[1]) > 0 && decimal(m.str[4], true)
	case 13: // Order: lines = 7
		return m.scan(v, 7, 1<<7, 0, func(_ protowire.Number, f []byte) bool {
			var l wireMsg
			return l.strings(f, 4) && len(l.str[2]) > 0 && decimal(l.str[3], true) && decimal(l.str[4], false)
		}) && len(m.str[1]) > 0 && decimal(m.str[6], false) && currency(m.str[5])
	case 14: // OrderAck
		return m.strings(v, 4) && len(m.str[1]) > 0
	case 15: // Shipment: shipped_at = 6, lines = 7
		return m.scan(v, 7, 1<<7, 1<<6, func(num protowire.Number, f []byte) bool {
			if num == 6 {
				return wireTimestamp(f)
			}
			var l wireMsg
			return l.strings(f, 2) && decimal(l.str[2], true)
		}) && len(m.str[1]) > 0
	case 16: // Invoice
		return m.strings(v, 4) && len(m.str[1]) > 0 && decimal(m.str[4], false) && currency(m.str[3])
	case 17: // SalesReturn: lines = 4
		return m.scan(v, 4, 1<<4, 0, func(_ protowire.Number, f []byte) bool {
			var l wireMsg
			return l.strings(f, 2) && decimal(l.str[2], false)
		}) && len(m.str[1]) > 0
	}
	return false
}

// wireMapEntry reads a map<string, string> entry holding both its key and its value,
// once each.
func wireMapEntry(v []byte) (k, val []byte, ok bool) {
	var m wireMsg
	if !m.strings(v, 2) || m.seen != 1<<1|1<<2 {
		return nil, nil, false
	}
	return m.str[1], m.str[2], true
}

// wireTimestamp reads a google.protobuf.Timestamp: varint fields seconds = 1 and
// nanos = 2, at most once each.
func wireTimestamp(v []byte) bool {
	var seen uint8
	for len(v) > 0 {
		num, wt, _, ok := wireField(&v)
		if !ok || num < 1 || num > 2 || wt != protowire.VarintType || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
	}
	return true
}
