package edi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// ErrMapping is wrapped by every error of the outbound builders: the canonical
// document lacks something the transaction set requires.
var ErrMapping = errors.New("edi: cannot map canonical document to X12")

func mapErr(set, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMapping, set, fmt.Sprintf(format, args...))
}

// segs builds a set's segments; trailing empty elements are dropped by the writer.
type segs []x12.Segment

func (s *segs) add(id string, v ...string) { *s = append(*s, x12.Seg(id, v...)) }

// productIDs is the qualifier/id pairs of a line: VP (our SKU), UP/EN/UK (GTIN by
// length), BP (the partner's item id).
func productIDs(sku, gtin, partnerItem string) []string {
	var out []string
	if sku != "" {
		out = append(out, "VP", sku)
	}
	if gtin != "" {
		q := "UK"
		switch len(gtin) {
		case 12:
			q = "UP"
		case 13:
			q = "EN"
		}
		out = append(out, q, gtin)
	}
	if partnerItem != "" {
		out = append(out, "BP", partnerItem)
	}
	return out
}

// party writes an N1 loop (N1, N3, N4) for p with entity code code. The N1 id is the
// GLN (UL) when known, else the partner's location code (92).
func (s *segs) party(code string, p *eventv1.Party) {
	if p == nil {
		return
	}
	n1 := []string{code, p.GetName()}
	switch {
	case p.GetGln() != "":
		n1 = append(n1, "UL", p.GetGln())
	case p.GetLocationCode() != "":
		n1 = append(n1, "92", p.GetLocationCode())
	}
	s.add("N1", n1...)
	for i := 0; i < len(p.GetAddressLines()); i += 2 {
		a := p.GetAddressLines()[i:min(i+2, len(p.GetAddressLines()))]
		s.add("N3", a...)
	}
	if p.GetCity() != "" || p.GetRegion() != "" || p.GetPostalCode() != "" || p.GetCountry() != "" {
		s.add("N4", p.GetCity(), p.GetRegion(), p.GetPostalCode(), p.GetCountry())
	}
}

func uom(u string) string {
	if u == "" {
		return "EA"
	}
	return u
}

// valid runs the canonical validation of the payload before mapping, so a document
// the model refuses is never sent.
func valid(set string, ev *eventv1.Event) error {
	canonical.Normalize(ev)
	if err := canonical.ValidateFields(ev); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMapping, set, err)
	}
	return nil
}

// ackLineCodes maps OrderAckLine.status to ACK01.
var ackLineCodes = map[string]string{
	canonical.AckLineAccepted:    "IA",
	canonical.AckLineRejected:    "IR",
	canonical.AckLineBackordered: "IB",
	canonical.AckLineChanged:     "IQ",
}

// Build855 builds an 855 purchase order acknowledgement from an OrderAck. BAK02 is AK
// (accepted, no detail) or RJ (rejected) without lines; with lines AD when every line
// is accepted, AC when some changed, were backordered or rejected, RD when all were
// rejected. Each line is a PO1 with its ACK (and MSG with the reason).
func Build855(a *eventv1.OrderAck) (*x12.Set, error) {
	if err := valid("855", &eventv1.Event{Payload: &eventv1.Event_OrderAck{OrderAck: a}}); err != nil {
		return nil, err
	}
	po := a.GetPurchaseOrderNumber()
	if po == "" {
		po = a.GetOrderNumber()
	}
	if a.GetOrderDate() == nil {
		return nil, mapErr("855", "orderAck.orderDate is required (BAK04, the PO date)")
	}
	rejected := a.GetStatus() == "rejected"
	kind := "AK"
	if rejected {
		kind = "RJ"
	}
	if len(a.GetLines()) > 0 {
		kind = "AD"
		nRejected := 0
		for _, l := range a.GetLines() {
			switch l.GetStatus() {
			case canonical.AckLineRejected:
				nRejected++
				kind = "AC"
			case canonical.AckLineChanged, canonical.AckLineBackordered:
				kind = "AC"
			}
		}
		if nRejected == len(a.GetLines()) || rejected {
			kind = "RD"
		}
	}
	var s segs
	s.add("BAK", "00", kind, po, ymd(a.GetOrderDate()), "", "", "", a.GetErpOrderNumber(), ymd(a.GetAcknowledgedAt()))
	if a.GetMessage() != "" {
		s.add("MSG", a.GetMessage())
	}
	for i, l := range a.GetLines() {
		s.add("PO1", append([]string{l.GetLineNumber(), l.GetQuantity(), uom(l.GetUnitOfMeasure()), l.GetUnitPrice(), pe(l.GetUnitPrice())},
			productIDs(l.GetSku(), l.GetGtin(), l.GetPartnerItemId())...)...)
		if l.GetLineNumber() == "" {
			return nil, mapErr("855", "orderAck.lines[%d].lineNumber is required (PO101)", i)
		}
		qty := l.GetQuantity()
		if l.GetStatus() == canonical.AckLineRejected && qty == "" {
			qty = "0"
		}
		ack := []string{ackLineCodes[l.GetStatus()], qty, uom(l.GetUnitOfMeasure())}
		if d := ymd(l.GetExpectedShipDate()); d != "" {
			ack = append(ack, "068", d)
		}
		s.add("ACK", ack...)
		if l.GetReason() != "" {
			s.add("MSG", l.GetReason())
		}
	}
	if len(a.GetLines()) > 0 {
		s.add("CTT", strconv.Itoa(len(a.GetLines())))
	}
	return &x12.Set{ID: "855", Segments: s}, nil
}

// pe is PO105 (basis of unit price: PE price per each) when there is a price.
func pe(price string) string {
	if price == "" {
		return ""
	}
	return "PE"
}

// Build856 builds an 856 ship notice from a Shipment, in the standard pick and pack
// structure (BSN05 0001): HL shipment (TD1, TD5, REF BM/CN, DTM 011/067, N1 SF/ST),
// HL order (PRF), then HL pack (MAN GM with the SSCC) with HL items (LIN, SN1) for each
// package, or HL items directly under the order when no packages are known.
func Build856(sh *eventv1.Shipment) (*x12.Set, error) {
	if err := valid("856", &eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: sh}}); err != nil {
		return nil, err
	}
	if sh.GetShippedAt() == nil {
		return nil, mapErr("856", "shipment.shippedAt is required (BSN03)")
	}
	po := sh.GetPurchaseOrderNumber()
	if po == "" {
		po = sh.GetOrderNumber()
	}
	if po == "" {
		return nil, mapErr("856", "shipment.purchaseOrderNumber or orderNumber is required (PRF01)")
	}
	if len(sh.GetLines()) == 0 && len(sh.GetPackages()) == 0 {
		return nil, mapErr("856", "shipment has no lines and no packages")
	}
	shipped := sh.GetShippedAt().AsTime().UTC()
	var s segs
	s.add("BSN", "00", sh.GetShipmentNumber(), shipped.Format("20060102"), shipped.Format("1504"), "0001")
	hl := 0
	addHL := func(parent int, code string) int {
		hl++
		p := ""
		if parent > 0 {
			p = strconv.Itoa(parent)
		}
		s.add("HL", strconv.Itoa(hl), p, code)
		return hl
	}
	ship := addHL(0, "S")
	if n := len(sh.GetPackages()); n > 0 || sh.GetWeight() != "" {
		td1 := []string{"CTN", strconv.Itoa(n)}
		if sh.GetWeight() != "" {
			td1 = append(td1, "", "", "", "G", sh.GetWeight(), weightUnit(sh.GetWeightUnit()))
		}
		if n == 0 {
			td1[1] = ""
		}
		s.add("TD1", td1...)
	}
	if sh.GetCarrierScac() != "" || sh.GetServiceLevel() != "" {
		td5 := []string{"", "2", sh.GetCarrierScac(), "", sh.GetCarrier()}
		if sh.GetCarrierScac() == "" {
			td5[1] = ""
		}
		if sv := sh.GetServiceLevel(); len(sv) == 2 {
			td5 = append(td5, "", "", "", "", "", "", sv)
		} else if sv != "" && td5[4] == "" {
			td5[4] = sv
		}
		s.add("TD5", td5...)
	}
	if v := sh.GetBillOfLading(); v != "" {
		s.add("REF", "BM", v)
	}
	if v := sh.GetTrackingNumber(); v != "" {
		s.add("REF", "CN", v)
	}
	s.add("DTM", "011", shipped.Format("20060102"))
	if d := ymd(sh.GetExpectedDelivery()); d != "" {
		s.add("DTM", "067", d)
	}
	s.party("SF", sh.GetShipFrom())
	s.party("ST", sh.GetShipTo())
	order := addHL(ship, "O")
	s.add("PRF", po)
	item := func(parent int, l *eventv1.ShipmentLine) {
		addHL(parent, "I")
		lin := append([]string{l.GetOrderLineNumber()}, productIDs(l.GetSku(), l.GetGtin(), l.GetPartnerItemId())...)
		s.add("LIN", lin...)
		sn1 := []string{"", l.GetQuantity(), uom(l.GetUnitOfMeasure())}
		if l.GetOrderedQuantity() != "" {
			sn1 = append(sn1, "", l.GetOrderedQuantity(), uom(l.GetUnitOfMeasure()))
		}
		s.add("SN1", sn1...)
	}
	if len(sh.GetPackages()) > 0 {
		for _, p := range sh.GetPackages() {
			pack := addHL(order, "P")
			if p.GetWeight() != "" {
				s.add("TD1", "CTN", "1", "", "", "", "G", p.GetWeight(), weightUnit(p.GetWeightUnit()))
			}
			if p.GetSscc() != "" {
				s.add("MAN", "GM", p.GetSscc())
			}
			if p.GetMarks() != "" {
				s.add("MAN", "ZZ", p.GetMarks())
			}
			for _, l := range p.GetLines() {
				item(pack, l)
			}
		}
	} else {
		for _, l := range sh.GetLines() {
			item(order, l)
		}
	}
	s.add("CTT", strconv.Itoa(hl))
	return &x12.Set{ID: "856", Segments: s}, nil
}

func weightUnit(u string) string {
	switch u {
	case "KG", "kg":
		return "KG"
	}
	return "LB"
}

// Build810 builds an 810 invoice: BIG, CUR, N1 loops (BT, ST, RE), ITD, IT1 (with
// PID), TDS (total in cents), TXI per tax line, CTT.
func Build810(inv *eventv1.Invoice) (*x12.Set, error) {
	if err := valid("810", &eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: inv}}); err != nil {
		return nil, err
	}
	if inv.GetInvoiceDate() == nil {
		return nil, mapErr("810", "invoice.invoiceDate is required (BIG01)")
	}
	if len(inv.GetLines()) == 0 {
		return nil, mapErr("810", "invoice has no lines (IT1)")
	}
	if inv.GetTotal() == "" {
		return nil, mapErr("810", "invoice.total is required (TDS01)")
	}
	total, err := cents(inv.GetTotal())
	if err != nil {
		return nil, mapErr("810", "invoice.total: %v", err)
	}
	po := inv.GetPurchaseOrderNumber()
	if po == "" {
		po = inv.GetOrderNumber()
	}
	var s segs
	s.add("BIG", ymd(inv.GetInvoiceDate()), inv.GetInvoiceNumber(), "", po)
	if inv.GetCurrency() != "" {
		s.add("CUR", "SE", inv.GetCurrency())
	}
	s.party("BT", inv.GetBillTo())
	s.party("ST", inv.GetShipTo())
	s.party("RE", inv.GetRemitTo())
	if t := inv.GetTerms(); t != nil {
		itd := []string{"01", "3", t.GetDiscountPercent(), "", "", "", "", "", "", "", "", t.GetDescription()}
		if t.GetDiscountDays() > 0 {
			itd[4] = strconv.Itoa(int(t.GetDiscountDays()))
		}
		if t.GetNetDays() > 0 {
			itd[6] = strconv.Itoa(int(t.GetNetDays()))
		}
		if d := ymd(inv.GetDueDate()); d != "" {
			itd[5] = d
		}
		if t.GetDiscountPercent() == "" {
			itd[0] = "05" // discount not applicable
		}
		s.add("ITD", itd...)
	}
	for i, l := range inv.GetLines() {
		if l.GetUnitPrice() == "" {
			return nil, mapErr("810", "invoice.lines[%d].unitPrice is required (IT104)", i)
		}
		s.add("IT1", append([]string{l.GetLineNumber(), l.GetQuantity(), uom(l.GetUnitOfMeasure()), l.GetUnitPrice(), "PE"},
			productIDs(l.GetSku(), l.GetGtin(), l.GetPartnerItemId())...)...)
		if l.GetDescription() != "" {
			s.add("PID", "F", "", "", "", l.GetDescription())
		}
	}
	tds := []string{total}
	if inv.GetSubtotal() != "" {
		sub, err := cents(inv.GetSubtotal())
		if err != nil {
			return nil, mapErr("810", "invoice.subtotal: %v", err)
		}
		tds = append(tds, sub)
	}
	s.add("TDS", tds...)
	for _, t := range inv.GetTaxLines() {
		txi := []string{t.GetType(), t.GetAmount(), t.GetRate()}
		if t.GetJurisdiction() != "" {
			txi = append(txi, "CD", t.GetJurisdiction())
		}
		s.add("TXI", txi...)
	}
	s.add("CTT", strconv.Itoa(len(inv.GetLines())))
	return &x12.Set{ID: "810", Segments: s}, nil
}

// Build846 builds an 846 inventory inquiry/advice for one partner: BIA (00, DD,
// reference, date), then per level LIN (VP sku) and QTY 33 (available for sale; on
// hand when available is empty). Levels must be one per SKU, already aggregated over
// the locations the partner may see.
func Build846(reference string, at time.Time, levels []*eventv1.InventoryLevel) (*x12.Set, error) {
	if reference == "" {
		return nil, mapErr("846", "a report reference is required (BIA03)")
	}
	var s segs
	at = at.UTC()
	s.add("BIA", "00", "DD", reference, at.Format("20060102"), at.Format("1504"))
	seen := map[string]bool{}
	for i, l := range levels {
		if err := valid("846", &eventv1.Event{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: l}}); err != nil {
			return nil, fmt.Errorf("levels[%d]: %w", i, err)
		}
		if seen[l.GetSku()] {
			return nil, mapErr("846", "levels[%d]: SKU %q appears twice: aggregate the locations first", i, l.GetSku())
		}
		seen[l.GetSku()] = true
		q := l.GetAvailable()
		if q == "" {
			q = l.GetOnHand()
		}
		s.add("LIN", "", "VP", l.GetSku())
		s.add("QTY", "33", q, uom(l.GetUnitOfMeasure()))
	}
	s.add("CTT", strconv.Itoa(len(levels)))
	return &x12.Set{ID: "846", Segments: s}, nil
}

// FunctionalIDs is the GS01 of each transaction set this package reads or writes.
var FunctionalIDs = map[string]string{"850": "PO", "855": "PR", "856": "SH", "810": "IN", "846": "IB"}

// Wrap puts outbound sets of one kind into an interchange ready for x12.Writer (which
// assigns control numbers and counts). h is the partner profile's header (sender,
// receiver, usage, ISA12 version); version is the group's GS08 (004010 or 005010).
func Wrap(h x12.Header, appSender, appReceiver, version string, at time.Time, sets ...*x12.Set) (*x12.Interchange, error) {
	if len(sets) == 0 {
		return nil, mapErr("interchange", "no transaction sets to send")
	}
	fid := FunctionalIDs[sets[0].ID]
	for _, s := range sets {
		if FunctionalIDs[s.ID] != fid || fid == "" {
			return nil, mapErr("interchange", "set %s cannot go in a %s group with set %s: one kind per functional group", s.ID, fid, sets[0].ID)
		}
	}
	at = at.UTC()
	h.Date, h.Time = at.Format("060102"), at.Format("1504")
	g := &x12.Group{FunctionalID: fid, AppSender: appSender, AppReceiver: appReceiver,
		Date: at.Format("20060102"), Time: at.Format("1504"), Agency: "X", Version: version, Sets: sets}
	return &x12.Interchange{Header: h, Groups: []*x12.Group{g}}, nil
}

// Build850 builds an 850 purchase order from an Order (to send an order on to a
// supplier, and to hold Map850 to a round trip): BEG, CUR, DTM 002/010, NTE, N1 loops
// ST and BT, PO1 with PID, CTT. Map850 of the result gives the order back.
func Build850(o *eventv1.Order) (*x12.Set, error) {
	if err := valid("850", &eventv1.Event{Payload: &eventv1.Event_Order{Order: o}}); err != nil {
		return nil, err
	}
	po := o.GetPurchaseOrderNumber()
	if po == "" {
		po = o.GetOrderNumber()
	}
	if o.GetOrderDate() == nil {
		return nil, mapErr("850", "order.orderDate is required (BEG05)")
	}
	if len(o.GetLines()) == 0 {
		return nil, mapErr("850", "order has no lines (PO1)")
	}
	var s segs
	s.add("BEG", "00", "SA", po, "", ymd(o.GetOrderDate()))
	if o.GetCurrency() != "" {
		s.add("CUR", "BY", o.GetCurrency())
	}
	if d := ymd(o.GetRequestedDeliveryDate()); d != "" {
		s.add("DTM", "002", d)
	}
	if d := ymd(o.GetRequestedShipDate()); d != "" {
		s.add("DTM", "010", d)
	}
	if o.GetNotes() != "" {
		for _, n := range strings.Split(o.GetNotes(), "\n") {
			s.add("NTE", "GEN", n)
		}
	}
	s.party("ST", o.GetShipTo())
	s.party("BT", o.GetBillTo())
	for _, l := range o.GetLines() {
		sku := l.GetSku()
		if sku == l.GetGtin() || sku == l.GetPartnerItemId() && l.GetGtin() == "" {
			sku = "" // the stand-in Map850 gives a line without a vendor part
		}
		s.add("PO1", append([]string{l.GetLineNumber(), l.GetQuantity(), l.GetUnitOfMeasure(), l.GetUnitPrice(), pe(l.GetUnitPrice())},
			productIDs(sku, l.GetGtin(), l.GetPartnerItemId())...)...)
		if l.GetDescription() != "" {
			s.add("PID", "F", "", "", "", l.GetDescription())
		}
	}
	s.add("CTT", strconv.Itoa(len(o.GetLines())))
	return &x12.Set{ID: "850", Segments: s}, nil
}
