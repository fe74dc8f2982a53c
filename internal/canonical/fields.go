package canonical

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Order acknowledgement line statuses (OrderAckLine.status).
const (
	AckLineAccepted    = "accepted"
	AckLineRejected    = "rejected"
	AckLineBackordered = "backordered"
	AckLineChanged     = "changed"
)

// checker collects field-named errors. Methods take a field name and format arguments
// so that the name is only formatted when there is an error to report.
type checker struct{ errs []error }

func (c *checker) add(field string, args []any, format string, v ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", fmt.Sprintf(field, args...), fmt.Sprintf(format, v...)))
}

func (c *checker) dec(v string, field string, args ...any) {
	if v != "" && !IsDecimal(v) {
		c.add(field, args, "%q is not a decimal number (digits, optional sign and fraction, e.g. \"12.50\")", v)
	}
}

// nonNeg checks an optional decimal that must not be negative (quantities, prices).
func (c *checker) nonNeg(v string, field string, args ...any) {
	switch {
	case v == "":
	case !IsDecimal(v):
		c.add(field, args, "%q is not a decimal number (digits, optional fraction, e.g. \"12.50\")", v)
	case v[0] == '-':
		c.add(field, args, "%q is negative", v)
	}
}

func (c *checker) currency(v string, field string, args ...any) {
	if v != "" && !IsCurrency(v) {
		c.add(field, args, "%q is not an ISO 4217 currency code (3 upper-case letters, e.g. \"USD\")", v)
	}
}

func (c *checker) gtin(v string, field string, args ...any) {
	if v != "" && !IsGTIN(v) {
		c.add(field, args, "%q is not a GTIN (8, 12, 13 or 14 digits with a valid check digit)", v)
	}
}

func (c *checker) time(ts *timestamppb.Timestamp, field string, args ...any) {
	if ts != nil && ts.CheckValid() != nil {
		c.add(field, args, "invalid timestamp (%v)", ts.CheckValid())
	}
}

func (c *checker) party(p *eventv1.Party, field string, args ...any) {
	if p == nil {
		return
	}
	if p.GetCountry() != "" && !IsCountry(p.GetCountry()) {
		c.add(field+".country", args, "%q is not an ISO 3166-1 alpha-2 country code (2 upper-case letters, e.g. \"US\")", p.GetCountry())
	}
	if p.GetGln() != "" && !IsGLN(p.GetGln()) {
		c.add(field+".gln", args, "%q is not a GLN (13 digits with a valid check digit)", p.GetGln())
	}
}

// validateEnriched checks the fields the orders model added (partners, parties, dates,
// lines of acks, shipments, invoices and returns). Existing fields are checked by
// validatePayload as before.
func validateEnriched(ev *eventv1.Event) []error {
	var c checker
	switch p := ev.GetPayload().(type) {
	case *eventv1.Event_Order:
		o := p.Order
		c.currency(o.GetCurrency(), "order.currency")
		c.time(o.GetOrderDate(), "order.orderDate")
		c.time(o.GetRequestedShipDate(), "order.requestedShipDate")
		c.time(o.GetRequestedDeliveryDate(), "order.requestedDeliveryDate")
		c.party(o.GetShipTo(), "order.shipTo")
		c.party(o.GetBillTo(), "order.billTo")
		for i, l := range o.GetLines() {
			// quantity keeps its old rule (any decimal): ERPs send negative lines for credits.
			c.gtin(l.GetGtin(), "order.lines[%d].gtin", i)
		}
	case *eventv1.Event_OrderAck:
		a := p.OrderAck
		c.time(a.GetAcknowledgedAt(), "orderAck.acknowledgedAt")
		c.time(a.GetOrderDate(), "orderAck.orderDate")
		for i, l := range a.GetLines() {
			switch l.GetStatus() {
			case AckLineAccepted, AckLineRejected, AckLineBackordered, AckLineChanged:
			default:
				c.add("orderAck.lines[%d].status", []any{i}, "%q is not one of accepted, rejected, backordered, changed", l.GetStatus())
			}
			if l.GetStatus() == AckLineChanged && l.GetQuantity() == "" {
				c.add("orderAck.lines[%d].quantity", []any{i}, "required when the status is changed")
			}
			c.nonNeg(l.GetQuantity(), "orderAck.lines[%d].quantity", i)
			c.dec(l.GetUnitPrice(), "orderAck.lines[%d].unitPrice", i)
			c.gtin(l.GetGtin(), "orderAck.lines[%d].gtin", i)
			c.time(l.GetExpectedShipDate(), "orderAck.lines[%d].expectedShipDate", i)
		}
	case *eventv1.Event_Shipment:
		s := p.Shipment
		c.party(s.GetShipFrom(), "shipment.shipFrom")
		c.party(s.GetShipTo(), "shipment.shipTo")
		if v := s.GetCarrierScac(); v != "" && !IsSCAC(v) {
			c.add("shipment.carrierScac", nil, "%q is not a SCAC (2 to 4 upper-case letters)", v)
		}
		c.nonNeg(s.GetWeight(), "shipment.weight")
		c.time(s.GetExpectedDelivery(), "shipment.expectedDelivery")
		for i, l := range s.GetLines() {
			c.shipLine(l, false, "shipment.lines[%d]", i)
		}
		for i, pk := range s.GetPackages() {
			if v := pk.GetSscc(); v != "" && !IsSSCC(v) {
				c.add("shipment.packages[%d].sscc", []any{i}, "%q is not an SSCC (18 digits with a valid check digit)", v)
			}
			c.nonNeg(pk.GetWeight(), "shipment.packages[%d].weight", i)
			for j, l := range pk.GetLines() {
				if l.GetQuantity() == "" {
					c.add("shipment.packages[%d].lines[%d].quantity", []any{i, j}, "required")
				}
				c.shipLine(l, true, "shipment.packages[%d].lines[%d]", i, j)
			}
		}
	case *eventv1.Event_Invoice:
		inv := p.Invoice
		c.currency(inv.GetCurrency(), "invoice.currency")
		c.dec(inv.GetSubtotal(), "invoice.subtotal")
		c.dec(inv.GetTaxTotal(), "invoice.taxTotal")
		c.time(inv.GetInvoiceDate(), "invoice.invoiceDate")
		c.time(inv.GetDueDate(), "invoice.dueDate")
		c.party(inv.GetBillTo(), "invoice.billTo")
		c.party(inv.GetRemitTo(), "invoice.remitTo")
		c.party(inv.GetShipTo(), "invoice.shipTo")
		for i, l := range inv.GetLines() {
			if l.GetQuantity() == "" {
				c.add("invoice.lines[%d].quantity", []any{i}, "required")
			}
			c.dec(l.GetQuantity(), "invoice.lines[%d].quantity", i)
			c.dec(l.GetUnitPrice(), "invoice.lines[%d].unitPrice", i)
			c.dec(l.GetAmount(), "invoice.lines[%d].amount", i)
			c.gtin(l.GetGtin(), "invoice.lines[%d].gtin", i)
		}
		if t := inv.GetTerms(); t != nil {
			if t.GetNetDays() < 0 {
				c.add("invoice.terms.netDays", nil, "%d is negative", t.GetNetDays())
			}
			if t.GetDiscountDays() < 0 {
				c.add("invoice.terms.discountDays", nil, "%d is negative", t.GetDiscountDays())
			}
			c.nonNeg(t.GetDiscountPercent(), "invoice.terms.discountPercent")
		}
		for i, t := range inv.GetTaxLines() {
			if t.GetAmount() == "" {
				c.add("invoice.taxLines[%d].amount", []any{i}, "required")
			}
			c.dec(t.GetAmount(), "invoice.taxLines[%d].amount", i)
			c.nonNeg(t.GetRate(), "invoice.taxLines[%d].rate", i)
		}
	case *eventv1.Event_SalesReturn:
		for i, l := range p.SalesReturn.GetLines() {
			c.shipLine(l, false, "salesReturn.lines[%d]", i)
		}
	}
	return c.errs
}

// shipLine checks a shipment, package or return line. The quantity of shipment and
// return lines existed before the orders model and stays any decimal (negative
// corrections exist); a package line's quantity must not be negative.
func (c *checker) shipLine(l *eventv1.ShipmentLine, newLine bool, field string, args ...any) {
	if newLine {
		c.nonNeg(l.GetQuantity(), field+".quantity", args...)
	} else {
		c.dec(l.GetQuantity(), field+".quantity", args...)
	}
	c.nonNeg(l.GetOrderedQuantity(), field+".orderedQuantity", args...)
	c.gtin(l.GetGtin(), field+".gtin", args...)
}

// IsCurrency reports whether s looks like an ISO 4217 code: 3 upper-case ASCII letters.
func IsCurrency(s string) bool { return len(s) == 3 && upper(s) }

// IsCountry reports whether s looks like an ISO 3166-1 alpha-2 code: 2 upper-case ASCII letters.
func IsCountry(s string) bool { return len(s) == 2 && upper(s) }

// IsSCAC reports whether s looks like a Standard Carrier Alpha Code: 2 to 4 upper-case letters.
func IsSCAC(s string) bool { return len(s) >= 2 && len(s) <= 4 && upper(s) }

// IsGLN reports whether s is a GS1 Global Location Number: 13 digits, the last a valid
// GS1 mod-10 check digit.
func IsGLN(s string) bool { return len(s) == 13 && gs1Check(s) }

// IsGTIN reports whether s is a GTIN-8, -12, -13 or -14 with a valid check digit.
func IsGTIN(s string) bool {
	switch len(s) {
	case 8, 12, 13, 14:
		return gs1Check(s)
	}
	return false
}

// IsSSCC reports whether s is a Serial Shipping Container Code: 18 digits with a valid
// check digit.
func IsSSCC(s string) bool { return len(s) == 18 && gs1Check(s) }

// GS1CheckDigit computes the GS1 mod-10 check digit of the digits in body (a GLN, GTIN
// or SSCC without its last digit). It returns -1 when body has a non-digit.
func GS1CheckDigit(body string) int {
	sum := 0
	for i := 0; i < len(body); i++ {
		d := int(body[len(body)-1-i]) - '0'
		if d < 0 || d > 9 {
			return -1
		}
		if i%2 == 0 {
			d *= 3
		}
		sum += d
	}
	return (10 - sum%10) % 10
}

func gs1Check(s string) bool {
	if s == "" {
		return false
	}
	last := int(s[len(s)-1]) - '0'
	return last >= 0 && last <= 9 && GS1CheckDigit(s[:len(s)-1]) == last
}

func upper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
