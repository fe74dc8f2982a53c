package wire

import "google.golang.org/protobuf/encoding/protowire"

// EventHead is what tracing needs of an encoded Event without decoding it: its id,
// type, and trace context (Event.trace). The slices point into the encoding.
type EventHead struct {
	ID, Type, Traceparent, Tracestate []byte
}

// ReadEventHead reads the id, type and trace context of b, an encoded Event (the last
// occurrence of each field, as proto decoding keeps). ok is false when b does not split
// into fields; fields of other wire types than expected are skipped. Only tracing calls
// it, and only when tracing is on.
func ReadEventHead(b []byte) (h EventHead, ok bool) {
	for len(b) > 0 {
		num, wt, v, ok := wireField(&b)
		if !ok {
			return EventHead{}, false
		}
		if wt != protowire.BytesType {
			continue
		}
		switch num {
		case 1:
			h.ID = v
		case 2:
			h.Type = v
		case 6:
			// A message field seen twice merges: its fields are read in order.
			for len(v) > 0 {
				n, t, f, ok := wireField(&v)
				if !ok {
					return EventHead{}, false
				}
				if t != protowire.BytesType {
					continue
				}
				switch n {
				case 1:
					h.Traceparent = f
				case 2:
					h.Tracestate = f
				}
			}
		}
	}
	return h, true
}
