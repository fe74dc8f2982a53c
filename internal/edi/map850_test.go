package edi

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func day(s string) *timestamppb.Timestamp {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func map850File(t *testing.T, name string) *eventv1.Order {
	t.Helper()
	ics := readClean(t, readTestdata(t, name))
	sets := ics[0].Groups[0].Sets
	if len(sets) != 1 {
		t.Fatalf("%s: %d sets, want 1", name, len(sets))
	}
	o, errs := Map850(sets[0], Options{Partner: "bigbox"})
	if len(errs) > 0 || o == nil {
		t.Fatalf("%s: mapping errors %+v", name, errs)
	}
	if err := canonical.Validate(&eventv1.Event{Type: canonical.TypeOrder, Payload: &eventv1.Event_Order{Order: o}}); err != nil {
		t.Fatalf("%s: mapped order fails canonical validation: %v", name, err)
	}
	return o
}

// TestMap850Retailer maps a big-box retailer's 004010 850 and checks every field.
func TestMap850Retailer(t *testing.T) {
	got := map850File(t, "850_004010_bigbox.x12")
	want := &eventv1.Order{
		OrderNumber: "4500098765", PurchaseOrderNumber: "4500098765", Partner: "bigbox", Channel: "edi",
		Currency: "USD", OrderDate: day("2026-12-04"), RequestedDeliveryDate: day("2026-12-18"), RequestedShipDate: day("2026-12-15"),
		Notes: "DELIVER TO DOCK 4 BEFORE NOON",
		ShipTo: &eventv1.Party{Name: "BIGBOX DC 7", Gln: "0614141000012", AddressLines: []string{"1200 DISTRIBUTION WAY", "BUILDING B"},
			City: "RENO", Region: "NV", PostalCode: "89501", Country: "US"},
		BillTo: &eventv1.Party{Name: "BIGBOX RETAIL INC", LocationCode: "HQ01", AddressLines: []string{"PO BOX 4400"},
			City: "MINNEAPOLIS", Region: "MN", PostalCode: "55440", Country: "US"},
		Lines: []*eventv1.OrderLine{
			{LineNumber: "1", Quantity: "24", UnitOfMeasure: "EA", UnitPrice: "12.50", PartnerItemId: "BB-100234", Sku: "SKU-001",
				Gtin: "012345678905", Description: "WIDGET, BLUE, 10 CM"},
			// No vendor part: the GTIN stands in for the SKU.
			{LineNumber: "2", Quantity: "6", UnitOfMeasure: "CA", UnitPrice: "80", PartnerItemId: "BB-100777", Sku: "4006381333931",
				Gtin: "4006381333931", Description: "GADGET CASE OF 12"},
			{LineNumber: "3", Quantity: "2", UnitOfMeasure: "EA", UnitPrice: "0.99", PartnerItemId: "BB-100999", Sku: "BB-100999"},
		},
	}
	if !proto.Equal(got, want) {
		t.Fatalf("order differs:\ngot  %s\nwant %s", protojson.Format(got), protojson.Format(want))
	}
}

// TestMap850Marketplace maps a 005010 850 with | and } delimiters and a consumer
// ship-to without identifiers; the partner defaults to the ISA sender.
func TestMap850Marketplace(t *testing.T) {
	ics := readClean(t, readTestdata(t, "850_005010_marketplace.x12"))
	o, errs := Map850(ics[0].Groups[0].Sets[0], Options{})
	if len(errs) > 0 {
		t.Fatalf("mapping errors %+v", errs)
	}
	if o.Partner != "ZZ:MARKETPLACE" || o.PurchaseOrderNumber != "MP-2026-000123" || o.Currency != "EUR" ||
		!proto.Equal(o.RequestedShipDate, day("2026-12-06")) || o.RequestedDeliveryDate != nil {
		t.Fatalf("header: %s", protojson.Format(o))
	}
	if p := o.ShipTo; p.Name != "ERIKA MUSTERMANN" || p.Country != "DE" || p.PostalCode != "10115" || p.Gln != "" || p.LocationCode != "" {
		t.Fatalf("ship to: %s", protojson.Format(p))
	}
	if l := o.Lines[0]; l.Sku != "SKU-9" || l.Gtin != "4006381333931" || l.Quantity != "1" || l.UnitPrice != "19.95" {
		t.Fatalf("line: %s", protojson.Format(l))
	}
}

// TestMap850ErrorsInAck: mapping errors reach the 997 as AK3/AK4 naming segment and
// element; a set with a mandatory problem is rejected and gives no order, one with only
// optional problems is accepted with errors.
func TestMap850ErrorsInAck(t *testing.T) {
	in, orders := readMapped(t, readTestdata(t, "850_004010_bad_mapping.x12"))
	first, second := orders["0001"], orders["0002"]
	if first.ok || first.set.Result.Status != x12.StatusRejected {
		t.Fatalf("set 0001: order returned %v, status %s; want no order and R", first.ok, first.set.Result.Status)
	}
	if !second.ok || second.set.Result.Status != x12.StatusWithErrors {
		t.Fatalf("set 0002: order returned %v, status %s; want an order and E", second.ok, second.set.Result.Status)
	}
	g := in.ic.Groups[0]
	if st, acc := x12.GroupStatus(g); st != x12.StatusPartial || acc != 1 {
		t.Fatalf("group status %s with %d accepted, want P with 1", st, acc)
	}
	d := x12.Delimiters{Element: '*', Component: ':', Segment: '~', Suffix: "\n"}
	ack := x12.Acknowledge(in.ic, x12.AckOptions{Now: testTime, Delimiters: d})
	var buf bytes.Buffer
	if err := x12.NewWriter(&buf, d, &x12.Sequence{}).Write(ack); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{
		"AK3*N1*3*N1*8~\nAK4*4*67*6*0614141000019~", // GLN check digit (optional)
		"AK3*PO1*5*PO1*8~\nAK4*2*330*2~",            // quantity missing
		"AK3*PO1*6*PO1*8~\nAK4*7*234*2~",            // no product id
		"AK3*CTT*7**8~\nAK4*1*354*7*2~",             // CTT01 2 but 3 PO1
		"AK5*R*5~",                                  // set 0001 rejected
		"AK3*CUR*3**8~\nAK4*2*100*7*usd~",           // currency code
		"AK5*E~",                                    // set 0002 accepted with errors
		"AK9*P*2*2*1~",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("997 lacks %q", want)
		}
	}
	golden(t, "850_004010_bad_mapping.997", buf.Bytes())
}

// TestMap850ErrorsIn999: in 005010 the same errors go to IK3/IK4 with the CTX naming
// the purchase order.
func TestMap850ErrorsIn999(t *testing.T) {
	data := bytes.Replace(readTestdata(t, "850_005010_marketplace.x12"), []byte("PO1|1|1|EA"), []byte("PO1|1|0|EA"), 1)
	in, orders := readMapped(t, data)
	if orders["0001"].ok {
		t.Fatal("an order with a zero quantity was mapped")
	}
	d := x12.Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~', Suffix: "\n"}
	ack := x12.Acknowledge(in.ic, x12.AckOptions{Now: testTime, Delimiters: d})
	var buf bytes.Buffer
	if err := x12.NewWriter(&buf, d, &x12.Sequence{}).Write(ack); err != nil {
		t.Fatal(err)
	}
	want := "IK3*PO1*8*PO1*8~\nCTX*BEG03:MP-2026-000123~\nIK4*2*330*6*0~\nIK5*R*5~\nAK9*R*1*1*0~"
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("999 lacks\n%s\ngot\n%s", want, buf.String())
	}
}
