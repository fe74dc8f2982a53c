package canonical

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func fullOrder() *eventv1.Order {
	return &eventv1.Order{
		OrderNumber: "PO-1", Partner: "retailco", PurchaseOrderNumber: "PO-1", Currency: "USD",
		OrderDate: timestamppb.New(mustDate("2026-12-04")), RequestedShipDate: timestamppb.New(mustDate("2026-12-15")),
		ShipTo: &eventv1.Party{Name: "DC 7", AddressLines: []string{"1 Dock Rd"}, City: "Reno", Region: "NV",
			PostalCode: "89501", Country: "US", Gln: "0614141000012", LocationCode: "0007"},
		BillTo: &eventv1.Party{Name: "RetailCo", Country: "US"},
		Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "24", UnitPrice: "12.50",
			Gtin: "012345678905", PartnerItemId: "B-1", UnitOfMeasure: "EA"}},
	}
}

// TestValidateEnriched holds each rule of the orders model to a field-named error, and
// a complete document of each kind to no error.
func TestValidateEnriched(t *testing.T) {
	ok := map[string]*eventv1.Event{
		"order": {Payload: &eventv1.Event_Order{Order: fullOrder()}},
		"ack": {Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: "PO-1", Lines: []*eventv1.OrderAckLine{
			{LineNumber: "1", Status: AckLineAccepted, Quantity: "24"}, {LineNumber: "2", Status: AckLineChanged, Quantity: "5"},
			{LineNumber: "3", Status: AckLineRejected, Reason: "discontinued"}, {LineNumber: "4", Status: AckLineBackordered}}}}},
		"shipment": {Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S1", CarrierScac: "UPSN",
			ShipFrom: &eventv1.Party{Gln: "0614141000012"}, Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "2", OrderLineNumber: "1"}},
			Packages: []*eventv1.Package{{Sscc: "106141411234567897", Weight: "4.5", WeightUnit: "LB",
				Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "2"}}}}}}},
		"invoice": {Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I1", Currency: "EUR",
			Subtotal: "100.00", TaxTotal: "8.25", Total: "108.25", InvoiceDate: timestamppb.New(mustDate("2026-12-20")),
			Terms:    &eventv1.PaymentTerms{NetDays: 30, DiscountPercent: "2", DiscountDays: 10},
			TaxLines: []*eventv1.TaxLine{{Type: "ST", Amount: "8.25", Rate: "8.25"}},
			Lines:    []*eventv1.InvoiceLine{{LineNumber: "1", Sku: "A", Quantity: "8", UnitPrice: "12.50", Amount: "100.00"}}}}},
		"return": {Payload: &eventv1.Event_SalesReturn{SalesReturn: &eventv1.SalesReturn{ReturnNumber: "R1", Reason: "damaged",
			Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "1", Reason: "damaged"}}}}},
	}
	for name, ev := range ok {
		Normalize(ev)
		if err := Validate(ev); err != nil {
			t.Errorf("%s: valid event refused: %v", name, err)
		}
	}
	order := func(f func(o *eventv1.Order)) *eventv1.Event {
		o := fullOrder()
		f(o)
		return &eventv1.Event{Payload: &eventv1.Event_Order{Order: o}}
	}
	for name, tc := range map[string]struct {
		ev   *eventv1.Event
		want string
	}{
		"lower-case currency": {order(func(o *eventv1.Order) { o.Currency = "usd" }), `order.currency: "usd" is not an ISO 4217`},
		"long currency":       {order(func(o *eventv1.Order) { o.Currency = "USDX" }), "order.currency"},
		"country name":        {order(func(o *eventv1.Order) { o.ShipTo.Country = "USA" }), `order.shipTo.country: "USA"`},
		"GLN check digit":     {order(func(o *eventv1.Order) { o.ShipTo.Gln = "0614141000013" }), "order.shipTo.gln"},
		"GLN length":          {order(func(o *eventv1.Order) { o.BillTo.Gln = "614141000012" }), "order.billTo.gln"},
		"GTIN check digit":    {order(func(o *eventv1.Order) { o.Lines[0].Gtin = "012345678906" }), "order.lines[0].gtin"},
		"negative ack quantity": {&eventv1.Event{Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: "1",
			Lines: []*eventv1.OrderAckLine{{Status: AckLineAccepted, Quantity: "-2"}}}}}, `orderAck.lines[0].quantity: "-2" is negative`},
		"negative package quantity": {&eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S",
			Packages: []*eventv1.Package{{Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "-1"}}}}}}}, "shipment.packages[0].lines[0].quantity"},
		"bad order date": {order(func(o *eventv1.Order) { o.OrderDate = &timestamppb.Timestamp{Seconds: 1, Nanos: -1} }),
			"order.orderDate: invalid timestamp"},
		"ack line status": {&eventv1.Event{Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: "1",
			Lines: []*eventv1.OrderAckLine{{Status: "ok"}}}}}, `orderAck.lines[0].status: "ok"`},
		"changed without quantity": {&eventv1.Event{Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: "1",
			Lines: []*eventv1.OrderAckLine{{Status: AckLineChanged}}}}}, "orderAck.lines[0].quantity: required"},
		"SCAC": {&eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S",
			CarrierScac: "ups"}}}, "shipment.carrierScac"},
		"SSCC": {&eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S",
			Packages: []*eventv1.Package{{Sscc: "106141411234567898"}}}}}, "shipment.packages[0].sscc"},
		"package line quantity": {&eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S",
			Packages: []*eventv1.Package{{Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "1.2.3"}}}}}}}, "shipment.packages[0].lines[0].quantity"},
		"ship from GLN": {&eventv1.Event{Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "S",
			ShipFrom: &eventv1.Party{Gln: "abc"}}}}, "shipment.shipFrom.gln"},
		"invoice line amount": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			Lines: []*eventv1.InvoiceLine{{Quantity: "1", Amount: "1,00"}}}}}, "invoice.lines[0].amount"},
		"invoice line quantity missing": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			Lines: []*eventv1.InvoiceLine{{Amount: "1"}}}}}, "invoice.lines[0].quantity: required"},
		"invoice subtotal": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			Subtotal: "1e2"}}}, "invoice.subtotal"},
		"net days": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			Terms: &eventv1.PaymentTerms{NetDays: -30}}}}, "invoice.terms.netDays"},
		"tax amount": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			TaxLines: []*eventv1.TaxLine{{Type: "ST"}}}}}, "invoice.taxLines[0].amount: required"},
		"invoice currency": {&eventv1.Event{Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "I",
			Currency: "$"}}}, "invoice.currency"},
		"return line": {&eventv1.Event{Payload: &eventv1.Event_SalesReturn{SalesReturn: &eventv1.SalesReturn{ReturnNumber: "R",
			Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "x"}}}}}, "salesReturn.lines[0].quantity"},
	} {
		Normalize(tc.ev)
		err := Validate(tc.ev)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an ErrInvalid naming %q", name, err, tc.want)
		}
	}
}

func TestGS1(t *testing.T) {
	// Check digits from GS1's published examples.
	for _, s := range []string{"0614141000012", "4006381333931", "012345678905", "96385074", "00012345600012", "106141411234567897"} {
		if !gs1Check(s) {
			t.Errorf("gs1Check(%q) = false", s)
		}
	}
	for _, s := range []string{"0614141000019", "4006381333932", "", "x", "01234567890a"} {
		if gs1Check(s) {
			t.Errorf("gs1Check(%q) = true", s)
		}
	}
	if IsGTIN("0614141000012345") || IsGLN("012345678905") || !IsSSCC("106141411234567897") {
		t.Error("length rules of GTIN, GLN or SSCC not applied")
	}
}

func mustDate(s string) time.Time {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestOldFieldsKeepTheirRules: fields that existed before the orders model accept what
// they accepted before (a negative order, shipment or return line is a credit or a
// correction some ERPs send).
func TestOldFieldsKeepTheirRules(t *testing.T) {
	for name, ev := range map[string]*eventv1.Event{
		"order line":    {Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "1", Lines: []*eventv1.OrderLine{{Sku: "A", Quantity: "-1"}}}}},
		"shipment line": {Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "1", Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "-1"}}}}},
		"return line":   {Payload: &eventv1.Event_SalesReturn{SalesReturn: &eventv1.SalesReturn{ReturnNumber: "1", Lines: []*eventv1.ShipmentLine{{Sku: "A", Quantity: "-1"}}}}},
	} {
		Normalize(ev)
		if err := Validate(ev); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}
