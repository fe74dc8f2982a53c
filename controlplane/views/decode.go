package views

import (
	"errors"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/canonical"
)

// Field numbers of crossdock.event.v1.Event and its view payloads (pinned to the
// descriptors by TestFieldNumbers).
const (
	fieldEventType       protowire.Number = 2
	fieldEventOccurredAt protowire.Number = 4
	fieldPayloadItem     protowire.Number = 10
	fieldPayloadLevel    protowire.Number = 11
	fieldPayloadPrice    protowire.Number = 12

	// Item: sku 1, name 2, description 3, unit_of_measure 4, gtin 5.
	// InventoryLevel: sku 1, location 2, on_hand 3, allocated 4, available 5,
	// unit_of_measure 6. Price: sku 1, price_list 2, currency 3, amount 4,
	// valid_from 5, valid_to 6.
	fieldPriceValidFrom protowire.Number = 5
	fieldPriceValidTo   protowire.Number = 6
)

var errMalformed = errors.New("malformed protobuf")

// rawView is the part of one event the views need, read from the wire without
// allocating: the string fields point into the event's bytes.
type rawView struct {
	kind     protowire.Number // fieldPayload*, or 0 when the event is not a view type
	occurred int64            // occurred_at, unix nanoseconds; 0 when unset
	str      [7][]byte        // the payload's string fields 1..6 by number
	from, to int64            // price validity, unix nanoseconds; 0 when unset (open)
}

// viewType reports whether an event type is one the views fold.
func viewType(t []byte) bool {
	switch string(t) {
	case canonical.TypeInventoryLevel, canonical.TypePrice, canonical.TypeItem:
		return true
	}
	return false
}

// decodeEvent reads an Event's wire form. It looks at the type first and leaves the
// payload of any other type undecoded (rv.kind 0). Fields follow proto's rules: the
// last occurrence of a scalar wins, occurrences of a message field merge, and a
// payload of another oneof case clears the one before. An event whose type is empty
// is folded by its payload (Normalize fills the type at publish, so the ledger does
// not hold such events; a hand-made entry might).
func decodeEvent(b []byte, rv *rawView) error {
	*rv = rawView{}
	var (
		typ      []byte
		hasType  bool
		payloads [][]byte // the payload occurrences of the current oneof case
		occ      [][]byte
		stack    [4][]byte
	)
	payloads = stack[:0]
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if wt != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, wt, b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == fieldEventType:
			typ, hasType = v, true
		case num == fieldEventOccurredAt:
			occ = append(occ, v)
		case num >= fieldPayloadItem && num <= 17:
			if num != rv.kind {
				rv.kind, payloads = num, payloads[:0]
			}
			payloads = append(payloads, v)
		}
	}
	if hasType && len(typ) > 0 && !viewType(typ) {
		rv.kind = 0
		return nil
	}
	if rv.kind < fieldPayloadItem || rv.kind > fieldPayloadPrice {
		rv.kind = 0
		return nil
	}
	var ts tsParts
	for _, o := range occ {
		if err := ts.merge(o); err != nil {
			return err
		}
	}
	rv.occurred = ts.nanos()
	var from, to tsParts
	for _, p := range payloads {
		if err := rv.payload(p, &from, &to); err != nil {
			return err
		}
	}
	rv.from, rv.to = from.nanos(), to.nanos()
	return nil
}

// payload merges one occurrence of the payload message into rv.
func (rv *rawView) payload(b []byte, from, to *tsParts) error {
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if wt != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, wt, b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if rv.kind == fieldPayloadPrice && (num == fieldPriceValidFrom || num == fieldPriceValidTo) {
			t := from
			if num == fieldPriceValidTo {
				t = to
			}
			if err := t.merge(v); err != nil {
				return err
			}
			continue
		}
		if num >= 1 && num <= 6 {
			rv.str[num] = v
		}
	}
	return nil
}

// tsParts is a google.protobuf.Timestamp being merged from its occurrences.
type tsParts struct {
	set         bool
	sec         int64
	nsec        int32
	hasS, hasNs bool
}

func (t *tsParts) merge(b []byte) error {
	t.set = true
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if wt == protowire.VarintType && (num == 1 || num == 2) {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if num == 1 {
				t.sec = int64(x)
			} else {
				t.nsec = int32(x)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, wt, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// nanos is the timestamp in unix nanoseconds, 0 when unset or the epoch itself (both
// mean "open" for a validity bound and "unknown" for occurred_at). Times beyond what
// int64 nanoseconds hold are clamped.
func (t *tsParts) nanos() int64 {
	if !t.set {
		return 0
	}
	return toNanos(time.Unix(t.sec, int64(t.nsec)))
}

// minTime and maxTime bound what unix nanoseconds in an int64 represent.
var (
	minTime = time.Unix(0, -1<<63)
	maxTime = time.Unix(0, 1<<63-1)
)

func toNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return maxTime.UnixNano()
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
