package edi

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

var (
	dc7    = &eventv1.Party{Name: "BIGBOX DC 7", Gln: "0614141000012", AddressLines: []string{"1200 DISTRIBUTION WAY", "BUILDING B"}, City: "RENO", Region: "NV", PostalCode: "89501", Country: "US"}
	acmeWH = &eventv1.Party{Name: "ACME DISTRIBUTION", LocationCode: "WH1", AddressLines: []string{"9 PORT RD"}, City: "OAKLAND", Region: "CA", PostalCode: "94607", Country: "US"}
)

func testAck() *eventv1.OrderAck {
	return &eventv1.OrderAck{OrderNumber: "4500098765", PurchaseOrderNumber: "4500098765", ErpOrderNumber: "SO-00042", Status: "accepted",
		OrderDate: day("2026-12-04"), AcknowledgedAt: day("2026-12-05"),
		Lines: []*eventv1.OrderAckLine{
			{LineNumber: "1", Sku: "SKU-001", Gtin: "012345678905", PartnerItemId: "BB-100234", Status: canonical.AckLineAccepted, Quantity: "24", UnitOfMeasure: "EA", UnitPrice: "12.50", ExpectedShipDate: day("2026-12-15")},
			{LineNumber: "2", Sku: "SKU-002", Status: canonical.AckLineChanged, Quantity: "4", UnitOfMeasure: "CA"},
			{LineNumber: "3", PartnerItemId: "BB-100999", Sku: "BB-100999", Status: canonical.AckLineRejected, Reason: "ITEM DISCONTINUED"},
		}}
}

func testShipment() *eventv1.Shipment {
	return &eventv1.Shipment{ShipmentNumber: "ASN-7001", OrderNumber: "SO-00042", PurchaseOrderNumber: "4500098765",
		Carrier: "UPS", CarrierScac: "UPSN", ServiceLevel: "ND", TrackingNumber: "1Z999AA10123456784", BillOfLading: "BOL-55",
		ShippedAt: day("2026-12-14"), ExpectedDelivery: day("2026-12-16"), Weight: "42.5", WeightUnit: "LB",
		ShipFrom: acmeWH, ShipTo: dc7,
		Lines: []*eventv1.ShipmentLine{{Sku: "SKU-001", Quantity: "24", OrderLineNumber: "1", UnitOfMeasure: "EA"}, {Sku: "SKU-002", Quantity: "4", OrderLineNumber: "2", UnitOfMeasure: "CA"}},
		Packages: []*eventv1.Package{
			{Sscc: "106141411234567897", Weight: "30", WeightUnit: "LB", Lines: []*eventv1.ShipmentLine{
				{Sku: "SKU-001", Gtin: "012345678905", PartnerItemId: "BB-100234", Quantity: "24", OrderedQuantity: "24", OrderLineNumber: "1", UnitOfMeasure: "EA"}}},
			{Sscc: "106141411234567903", Weight: "12.5", WeightUnit: "LB", Lines: []*eventv1.ShipmentLine{
				{Sku: "SKU-002", Quantity: "4", OrderedQuantity: "6", OrderLineNumber: "2", UnitOfMeasure: "CA"}}},
		}}
}

func testInvoice() *eventv1.Invoice {
	return &eventv1.Invoice{InvoiceNumber: "INV-9001", OrderNumber: "SO-00042", PurchaseOrderNumber: "4500098765", Currency: "USD",
		InvoiceDate: day("2026-12-14"), DueDate: day("2027-01-13"), BillTo: &eventv1.Party{Name: "BIGBOX RETAIL INC", LocationCode: "HQ01"},
		ShipTo: dc7, RemitTo: acmeWH,
		Terms: &eventv1.PaymentTerms{Description: "2% 10 NET 30", NetDays: 30, DiscountPercent: "2", DiscountDays: 10},
		Lines: []*eventv1.InvoiceLine{
			{LineNumber: "1", Sku: "SKU-001", Gtin: "012345678905", Quantity: "24", UnitPrice: "12.50", Amount: "300.00", UnitOfMeasure: "EA", Description: "WIDGET, BLUE, 10 CM"},
			{LineNumber: "2", Sku: "SKU-002", Quantity: "4", UnitPrice: "80.00", Amount: "320.00", UnitOfMeasure: "CA"},
		},
		Subtotal: "620.00", TaxTotal: "51.15", Total: "671.15",
		TaxLines: []*eventv1.TaxLine{{Type: "ST", Amount: "51.15", Rate: "8.25", Jurisdiction: "NV"}}}
}

func testLevels() []*eventv1.InventoryLevel {
	return []*eventv1.InventoryLevel{{Sku: "SKU-001", Location: "ALL", OnHand: "120", Available: "96", UnitOfMeasure: "EA"},
		{Sku: "SKU-002", Location: "ALL", OnHand: "10"}}
}

// writeOut wraps set in an interchange to BIGBOX and writes it with fresh control
// numbers and d, the way a partner profile would.
func writeOut(t *testing.T, set *x12.Set, version string, d x12.Delimiters) []byte {
	t.Helper()
	isa := "00401"
	if version == "005010" {
		isa = "00501"
	}
	h := x12.Header{AuthQual: "00", SecurityQual: "00", SenderQual: "ZZ", SenderID: "ACMEDIST", ReceiverQual: "ZZ", ReceiverID: "BIGBOXRETAIL",
		Version: isa, AckRequested: "0", Usage: "P", Standards: "U"}
	ic, err := Wrap(h, "ACMEDIST", "BIGBOXRETAIL", version, testTime, set)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := x12.NewWriter(&buf, d, &x12.Sequence{}).Write(ic); err != nil {
		t.Fatalf("writing %s: %v", set.ID, err)
	}
	return buf.Bytes()
}

// TestOutboundGolden builds each outbound set in 004010 and 005010, writes it, reads
// it back with internal/x12 (counts and control numbers must check) and compares it
// with its golden file.
func TestOutboundGolden(t *testing.T) {
	build := map[string]func() (*x12.Set, error){
		"855": func() (*x12.Set, error) { return Build855(testAck()) },
		"856": func() (*x12.Set, error) { return Build856(testShipment()) },
		"810": func() (*x12.Set, error) { return Build810(testInvoice()) },
		"846": func() (*x12.Set, error) { return Build846("INV-20261204", testTime, testLevels()) },
	}
	for _, id := range []string{"855", "856", "810", "846"} {
		for _, v := range []string{"004010", "005010"} {
			d := x12.DefaultDelimiters
			if v == "004010" {
				d.Repetition = 0
			} else {
				d = x12.Delimiters{Element: '|', Component: '>', Repetition: '^', Segment: '~', Suffix: "\n"}
			}
			set, err := build[id]()
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			out := writeOut(t, set, v, d)
			ics := readClean(t, out)
			g := ics[0].Groups[0]
			if g.FunctionalID != FunctionalIDs[id] || g.Version != v || len(g.Sets) != 1 || g.Sets[0].ID != id || g.Sets[0].Control != "0001" {
				t.Fatalf("%s %s read back as group %s %s with %d sets", id, v, g.FunctionalID, g.Version, len(g.Sets))
			}
			golden(t, fmt.Sprintf("%s_%s.x12", id, v), out)
		}
	}
}

// segValues finds the segments with id in set and returns their element values.
func segValues(s *x12.Set, id string) [][]string {
	var out [][]string
	for _, seg := range s.Segments {
		if seg.ID == id {
			var v []string
			for _, e := range seg.Elements {
				v = append(v, e.String())
			}
			out = append(out, v)
		}
	}
	return out
}

func TestBuild855Codes(t *testing.T) {
	set, err := Build855(testAck())
	if err != nil {
		t.Fatal(err)
	}
	if bak := segValues(set, "BAK")[0]; bak[1] != "AC" || bak[2] != "4500098765" || bak[3] != "20261204" || bak[7] != "SO-00042" || bak[8] != "20261205" {
		t.Fatalf("BAK %v", bak)
	}
	acks := segValues(set, "ACK")
	if len(acks) != 3 || acks[0][0] != "IA" || acks[0][4] != "20261215" || acks[1][0] != "IQ" || acks[1][1] != "4" || acks[2][0] != "IR" || acks[2][1] != "0" {
		t.Fatalf("ACK %v", acks)
	}
	if msg := segValues(set, "MSG"); len(msg) != 1 || msg[0][0] != "ITEM DISCONTINUED" {
		t.Fatalf("MSG %v", msg)
	}
	for _, c := range []struct {
		status string
		lines  []string
		want   string
	}{{"accepted", nil, "AK"}, {"rejected", nil, "RJ"}, {"accepted", []string{"accepted"}, "AD"},
		{"accepted", []string{"rejected", "rejected"}, "RD"}, {"accepted", []string{"accepted", "backordered"}, "AC"}} {
		a := &eventv1.OrderAck{OrderNumber: "1", Status: c.status, OrderDate: day("2026-12-04")}
		for i, st := range c.lines {
			a.Lines = append(a.Lines, &eventv1.OrderAckLine{LineNumber: fmt.Sprint(i + 1), Sku: "A", Status: st})
		}
		set, err := Build855(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := segValues(set, "BAK")[0][1]; got != c.want {
			t.Errorf("status %s lines %v: BAK02 %s, want %s", c.status, c.lines, got, c.want)
		}
	}
}

func TestBuild856Hierarchy(t *testing.T) {
	set, err := Build856(testShipment())
	if err != nil {
		t.Fatal(err)
	}
	var hl []string
	for _, v := range segValues(set, "HL") {
		hl = append(hl, strings.Join(v, "/"))
	}
	if got, want := strings.Join(hl, " "), "1//S 2/1/O 3/2/P 4/3/I 5/2/P 6/5/I"; got != want {
		t.Fatalf("HL hierarchy %q, want %q", got, want)
	}
	if ctt := segValues(set, "CTT"); ctt[0][0] != "6" {
		t.Fatalf("CTT %v, want the HL count 6", ctt)
	}
	if man := segValues(set, "MAN"); len(man) != 2 || man[0][1] != "106141411234567897" {
		t.Fatalf("MAN %v", man)
	}
	if sn1 := segValues(set, "SN1"); sn1[1][1] != "4" || sn1[1][4] != "6" {
		t.Fatalf("SN1 %v: want 4 shipped of 6 ordered", sn1)
	}
	// Without packages, items hang from the order.
	sh := testShipment()
	sh.Packages = nil
	set, _ = Build856(sh)
	hl = hl[:0]
	for _, v := range segValues(set, "HL") {
		hl = append(hl, strings.Join(v, "/"))
	}
	if got := strings.Join(hl, " "); got != "1//S 2/1/O 3/2/I 4/2/I" {
		t.Fatalf("HL without packages %q", got)
	}
}

func TestBuild810Amounts(t *testing.T) {
	set, err := Build810(testInvoice())
	if err != nil {
		t.Fatal(err)
	}
	if tds := segValues(set, "TDS")[0]; tds[0] != "67115" || tds[1] != "62000" {
		t.Fatalf("TDS %v: want cents 67115 and 62000", tds)
	}
	if itd := segValues(set, "ITD")[0]; itd[0] != "01" || itd[2] != "2" || itd[4] != "10" || itd[5] != "20270113" || itd[6] != "30" || itd[11] != "2% 10 NET 30" {
		t.Fatalf("ITD %v", itd)
	}
	if txi := segValues(set, "TXI")[0]; strings.Join(txi, "*") != "ST*51.15*8.25*CD*NV" {
		t.Fatalf("TXI %v", txi)
	}
	for _, c := range []struct{ in, want string }{{"1", "100"}, {"0.5", "50"}, {"12.340", "1234"}, {"-3.10", "-310"}, {"0", "0"}} {
		if got, err := cents(c.in); err != nil || got != c.want {
			t.Errorf("cents(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	inv := testInvoice()
	inv.Total = "671.155"
	if _, err := Build810(inv); !errors.Is(err, ErrMapping) || !strings.Contains(err.Error(), "invoice.total") {
		t.Fatalf("a total with three decimals: %v, want ErrMapping naming invoice.total", err)
	}
}

// TestOutboundRefusals: documents the model refuses, or that lack what the set
// requires, are not written.
func TestOutboundRefusals(t *testing.T) {
	noDate := testAck()
	noDate.OrderDate = nil
	badSSCC := testShipment()
	badSSCC.Packages[0].Sscc = "106141411234567898"
	notShipped := testShipment()
	notShipped.ShippedAt = nil
	noLines := testInvoice()
	noLines.Lines = nil
	for name, c := range map[string]struct {
		err  error
		want string
	}{
		"855 without PO date": {func() error { _, err := Build855(noDate); return err }(), "orderDate"},
		"856 bad SSCC":        {func() error { _, err := Build856(badSSCC); return err }(), "shipment.packages[0].sscc"},
		"856 not shipped":     {func() error { _, err := Build856(notShipped); return err }(), "shippedAt"},
		"810 without lines":   {func() error { _, err := Build810(noLines); return err }(), "no lines"},
		"846 SKU twice": {func() error {
			_, err := Build846("R", testTime, append(testLevels(), &eventv1.InventoryLevel{Sku: "SKU-001", Location: "B", OnHand: "1"}))
			return err
		}(), "appears twice"},
	} {
		if !errors.Is(c.err, ErrMapping) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrMapping naming %q", name, c.err, c.want)
		}
	}
}

// TestRoundTrip850: an order read from a retailer's 850, built into an 850 again,
// written, read back and mapped gives the same order, in both versions.
func TestRoundTrip850(t *testing.T) {
	for _, name := range []string{"850_004010_bigbox.x12", "850_005010_marketplace.x12"} {
		ics := readClean(t, readTestdata(t, name))
		want, errs := Map850(ics[0].Groups[0].Sets[0], Options{Partner: "p"})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		set, err := Build850(want)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, v := range []string{"004010", "005010"} {
			back := readClean(t, writeOut(t, set, v, x12.Delimiters{Element: '*', Component: ':', Segment: '~'}))
			got, errs := Map850(back[0].Groups[0].Sets[0], Options{Partner: "p"})
			if len(errs) > 0 || !proto.Equal(got, want) {
				t.Fatalf("%s via %s: errors %v\ngot  %v\nwant %v", name, v, errs, got, want)
			}
		}
	}
}
