package edi

import (
	"strconv"
	"strings"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Options tune the mapping of inbound sets.
type Options struct {
	// Partner is the Crossdock partner the set comes from (its profile's name); when
	// empty the interchange sender "qualifier:id" is used.
	Partner string
}

// Map850 maps an 850 purchase order to an Order. The order's OrderNumber and
// PurchaseOrderNumber are both BEG03. It returns the order (nil when the set cannot
// make one) and the mapping errors, each naming its segment and element for the
// 997/999 (see Apply). An order with only optional-element errors is returned with
// the bad values left out; a set the reader already rejected (its Result) gives none.
func Map850(s *x12.Set, opts Options) (*eventv1.Order, []x12.SegmentError) {
	var e errs
	o := &eventv1.Order{Partner: opts.Partner, Channel: "edi"}
	if o.Partner == "" {
		o.Partner = s.Envelope.SenderQual + ":" + s.Envelope.SenderID
	}
	var (
		party   *eventv1.Party // current N1 loop's party, nil when it is one we do not keep
		line    *eventv1.OrderLine
		lastPos = len(s.Segments) + 2 // SE position
		sawBEG  bool
		ctt     *x12.Segment
	)
	for i := range s.Segments {
		seg := s.Segments[i]
		switch seg.ID {
		case "BEG":
			sawBEG = true
			po := seg.Element(3).Value()
			if po == "" {
				e.elem(seg, 3, "324", x12.ElemMandatoryMissing, true, "purchase order number missing")
			} else if !printable(po) {
				e.elem(seg, 3, "324", x12.ElemInvalidChar, true, "purchase order number has control characters")
			}
			o.OrderNumber, o.PurchaseOrderNumber = po, po
			if ts, ok := date(seg.Element(5).Value(), ""); ok {
				o.OrderDate = ts
			} else {
				e.elem(seg, 5, "373", x12.ElemInvalidDate, true, "%q is not a date CCYYMMDD", seg.Element(5).Value())
			}
		case "CUR":
			cur := seg.Element(2).Value()
			if canonical.IsCurrency(cur) {
				o.Currency = cur
			} else {
				e.elem(seg, 2, "100", x12.ElemInvalidCode, false, "%q is not an ISO 4217 currency code", cur)
			}
		case "DTM":
			if line != nil {
				continue // line-level dates are not kept
			}
			ts, ok := date(seg.Element(2).Value(), seg.Element(3).Value())
			q := seg.Element(1).Value()
			if q != "002" && q != "010" {
				continue
			}
			if !ok {
				e.elem(seg, 2, "373", x12.ElemInvalidDate, false, "%q is not a date CCYYMMDD", seg.Element(2).Value())
				continue
			}
			if q == "002" {
				o.RequestedDeliveryDate = ts
			} else {
				o.RequestedShipDate = ts
			}
		case "NTE", "MSG":
			text := seg.Element(2).Value()
			if seg.ID == "MSG" {
				text = seg.Element(1).Value()
			}
			if line != nil {
				continue
			}
			if text != "" {
				if o.Notes != "" {
					o.Notes += "\n"
				}
				o.Notes += text
			}
		case "N1":
			party = nil
			if line != nil {
				continue // line-level parties (store allocations) are not kept
			}
			p := &eventv1.Party{Name: seg.Element(2).Value()}
			switch seg.Element(1).Value() {
			case "ST":
				party, o.ShipTo = p, p
			case "BT":
				party, o.BillTo = p, p
			default:
				continue
			}
			code := seg.Element(4).Value()
			switch seg.Element(3).Value() {
			case "UL":
				if canonical.IsGLN(code) {
					p.Gln = code
				} else {
					e.elem(seg, 4, "67", x12.ElemInvalidChar, false, "%q is not a GLN (13 digits with a valid check digit)", code)
				}
			case "":
			default: // 92 (assigned by buyer) and others: the partner's own location code
				p.LocationCode = code
			}
		case "N2":
			if party != nil && party.Name == "" {
				party.Name = seg.Element(1).Value()
			}
		case "N3":
			if party != nil {
				for _, p := range []int{1, 2} {
					if v := seg.Element(p).Value(); v != "" {
						party.AddressLines = append(party.AddressLines, v)
					}
				}
			}
		case "N4":
			if party != nil {
				party.City, party.Region, party.PostalCode = seg.Element(1).Value(), seg.Element(2).Value(), seg.Element(3).Value()
				if c := seg.Element(4).Value(); c != "" {
					if canonical.IsCountry(c) {
						party.Country = c
					} else {
						e.elem(seg, 4, "26", x12.ElemInvalidCode, false, "%q is not an ISO 3166 alpha-2 country code", c)
					}
				}
			}
		case "PO1":
			party = nil
			line = map850Line(seg, len(o.Lines), &e)
			o.Lines = append(o.Lines, line)
		case "PID":
			if line != nil && seg.Element(1).Value() == "F" && line.Description == "" {
				line.Description = seg.Element(5).Value()
			}
		case "CTT":
			c := seg
			ctt = &c
			line = nil
		}
	}
	if !sawBEG {
		e.missing("BEG", 2, "BEG missing: an 850 starts with BEG")
	}
	if len(o.Lines) == 0 {
		e.missing("PO1", lastPos, "no PO1 line items")
	}
	if ctt != nil {
		if n, err := strconv.Atoi(ctt.Element(1).Value()); err != nil || n != len(o.Lines) {
			e.elem(*ctt, 1, "354", x12.ElemInvalidCode, true, "%q line items counted, the set has %d PO1 segments", ctt.Element(1).Value(), len(o.Lines))
		}
	}
	if s.Result.Status == x12.StatusRejected {
		return nil, e.list // the reader rejected the set: no order, whatever the mapping says
	}
	for _, se := range e.list {
		if se.Code != x12.SegHasElementErrors {
			return nil, e.list
		}
		for _, el := range se.Elements {
			if el.Mandatory {
				return nil, e.list
			}
		}
	}
	return o, e.list
}

// printable reports whether v has no ASCII control characters.
func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// map850Line maps one PO1. i is the line's index, used for a missing PO101.
func map850Line(seg x12.Segment, i int, e *errs) *eventv1.OrderLine {
	l := &eventv1.OrderLine{LineNumber: seg.Element(1).Value(), UnitOfMeasure: seg.Element(3).Value()}
	if l.LineNumber == "" {
		l.LineNumber = strconv.Itoa(i + 1)
	}
	if q, ok := decimal(seg.Element(2).Value()); !ok || strings.HasPrefix(q, "-") || q == "0" {
		if seg.Element(2).Value() == "" {
			e.elem(seg, 2, "330", ElemConditionalMissing, true, "quantity ordered missing")
		} else {
			e.elem(seg, 2, "330", x12.ElemInvalidChar, true, "%q is not a positive quantity", seg.Element(2).Value())
		}
	} else {
		l.Quantity = q
	}
	if v := seg.Element(4).Value(); v != "" {
		if p, ok := decimal(v); ok {
			l.UnitPrice = p
		} else {
			e.elem(seg, 4, "212", x12.ElemInvalidChar, true, "%q is not a unit price", v)
		}
	}
	for p := 6; p+1 <= len(seg.Elements); p += 2 {
		q, id := seg.Element(p).Value(), seg.Element(p+1).Value()
		if id == "" {
			continue
		}
		switch q {
		case "BP", "IN", "CB":
			if l.PartnerItemId == "" {
				l.PartnerItemId = id
			}
		case "VP", "VN", "SK", "VA":
			if l.Sku == "" {
				l.Sku = id
			}
		case "UP", "EN", "UK", "UA":
			if canonical.IsGTIN(id) {
				l.Gtin = id
			} else {
				e.elem(seg, p+1, "234", x12.ElemInvalidChar, false, "%q is not a GTIN with a valid check digit (qualifier %s)", id, q)
			}
		}
	}
	if l.Sku == "" && l.PartnerItemId == "" && l.Gtin == "" {
		e.elem(seg, 7, "234", ElemConditionalMissing, true, "no product id (BP, IN, VP, VN, SK, UP, EN or UK)")
	}
	if l.Sku == "" {
		// The canonical order needs a SKU: the GTIN or the buyer's id stand in until an
		// item cross-reference resolves it.
		l.Sku = l.Gtin
		if l.Sku == "" {
			l.Sku = l.PartnerItemId
		}
	}
	return l
}
