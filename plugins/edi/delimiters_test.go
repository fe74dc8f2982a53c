package edi

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func day(s string) *timestamppb.Timestamp {
	t, _ := time.Parse("2006-01-02", s)
	return timestamppb.New(t)
}

// partnerFile is what the partner sends: one interchange with two PO groups (one 850
// each), written with its delimiters and version.
func partnerFile(t *testing.T, d x12.Delimiters, version, control string) []byte {
	t.Helper()
	var groups []*x12.Group
	for i, po := range []string{"PO-A-" + control, "PO-B-" + control} {
		set, err := edi.Build850(&eventv1.Order{OrderNumber: po, PurchaseOrderNumber: po, OrderDate: day("2026-12-04"),
			Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2", UnitPrice: "3.50"}, {LineNumber: "2", Sku: "4006381333931", Gtin: "4006381333931", Quantity: "1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if version == "005010" {
			set.ImplRef = "005010"
		}
		groups = append(groups, &x12.Group{FunctionalID: "PO", AppSender: "BIGBOXRETAIL", AppReceiver: "ACMEDIST", Date: "20261204", Time: "0915",
			Control: fmt.Sprint(100 + i), Agency: "X", Version: version, Sets: []*x12.Set{set}})
	}
	isa := "00401"
	if version == "005010" {
		isa = "00501"
	}
	ic := &x12.Interchange{Header: x12.Header{AuthQual: "00", SecurityQual: "00", SenderQual: "ZZ", SenderID: "BIGBOXRETAIL", ReceiverQual: "ZZ",
		ReceiverID: "ACMEDIST", Date: "261204", Time: "0915", Standards: "U", Version: isa, Control: control, AckRequested: "0", Usage: "P"}, Groups: groups}
	var b bytes.Buffer
	w := x12.NewWriter(&b, d, nil)
	for _, g := range groups {
		for i, s := range g.Sets {
			s.Control = fmt.Sprintf("%04d", i+1)
		}
	}
	if err := w.Write(ic); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDelimitersAndVersions: for each version and each set of unusual delimiters, with
// and without line breaks, a partner file with two groups becomes two orders and one
// acknowledgement (997 for 004010, 999 for 005010) with one group per inbound group,
// written in the profile's delimiters; 855, 856, 810 and 846 go out in them too and
// read back clean.
func TestDelimitersAndVersions(t *testing.T) {
	delims := []struct {
		name string
		in   x12.Delimiters
		out  edi.Separators
	}{
		{"pipe caret tilde, lines", x12.Delimiters{Element: '|', Component: '>', Repetition: '!', Segment: '~', Suffix: "\n"}, edi.Separators{Element: "|", Component: ">", Repetition: "!", Segment: "~", LineBreak: true}},
		{"star colon caret tilde, one line", x12.Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~'}, edi.Separators{Element: "*", Component: ":", Repetition: "^", Segment: "~"}},
		{"newline terminator", x12.Delimiters{Element: '^', Component: '\\', Repetition: '{', Segment: '\n'}, edi.Separators{Element: "^", Component: "\\", Repetition: "{", Segment: "\n"}},
		{"0x1D terminator", x12.Delimiters{Element: 0x1c, Component: 0x1f, Repetition: '`', Segment: 0x1d}, edi.Separators{Element: "\x1c", Component: "\x1f", Repetition: "`", Segment: "\x1d"}},
	}
	for _, version := range []string{"004010", "005010"} {
		for i, dl := range delims {
			t.Run(version+" "+dl.name, func(t *testing.T) {
				r := newRig(t)
				p := &r.settings.Partners[0]
				p.Version, p.Separators = version, &dl.out
				in := dl.in
				if version == "004010" {
					in.Repetition = 0
				}
				stub := &agentStub{}
				r.start(stub)
				control := fmt.Sprintf("%09d", 500+i)
				r.drop("po.x12", partnerFile(t, in, version, control))
				testutil.WaitFor(t, 10*time.Second, "po.x12 in done/", func() bool { return exists(filepath.Join(r.in, "done", "po.x12")) })
				_, evs := stub.snapshot()
				if len(evs) != 2 || evs[0].GetId() != canonical.OrderEventID("bigbox", "PO-A-"+control) || evs[1].GetId() != canonical.OrderEventID("bigbox", "PO-B-"+control) {
					t.Fatalf("events %v", evs)
				}
				ackKind := map[string]string{"004010": "997", "005010": "999"}[version]
				acks := outFiles(t, r.out)
				if len(acks) != 1 || !strings.HasPrefix(acks[0], "bigbox-"+ackKind+"-") {
					t.Fatalf("outbound %v, want one %s", acks, ackKind)
				}
				ics := readBack(t, filepath.Join(r.out, acks[0]), p.Delimiters())
				if len(ics[0].Groups) != 2 {
					t.Fatalf("%d ack groups, want one per inbound group", len(ics[0].Groups))
				}
				for gi, g := range ics[0].Groups {
					rep, err := x12.ParseFunctionalAck(g.Sets[0])
					if err != nil || rep.Kind != ackKind || rep.GroupControl != fmt.Sprint(100+gi) || rep.Status != "A" {
						t.Fatalf("ack group %d: %+v %v", gi, rep, err)
					}
				}
				// Outbound sets in the profile's delimiters.
				id := canonical.OrderID("bigbox", "PO-A-"+control)
				events := []*eventv1.Event{
					{Id: "a1", Type: canonical.TypeOrderAck, Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{OrderNumber: id, Partner: "bigbox",
						PurchaseOrderNumber: "PO-A-" + control, Status: "accepted", OrderDate: day("2026-12-04")}}},
					{Id: "s1", Type: canonical.TypeShipment, Payload: &eventv1.Event_Shipment{Shipment: &eventv1.Shipment{ShipmentNumber: "SH-1", OrderNumber: id,
						Partner: "bigbox", PurchaseOrderNumber: "PO-A-" + control, ShippedAt: day("2026-12-06"), Lines: []*eventv1.ShipmentLine{{Sku: "SKU-1", Quantity: "2"}}}}},
					{Id: "i1", Type: canonical.TypeInvoice, Payload: &eventv1.Event_Invoice{Invoice: &eventv1.Invoice{InvoiceNumber: "INV-1", OrderNumber: id,
						Partner: "bigbox", PurchaseOrderNumber: "PO-A-" + control, InvoiceDate: day("2026-12-07"), Total: "7.00", Currency: "USD",
						Lines: []*eventv1.InvoiceLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2", UnitPrice: "3.50"}}}}},
					{Id: "l1", Type: canonical.TypeInventoryLevel, OccurredAt: timestamppb.New(time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)),
						Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "SKU-1", Location: "main", OnHand: "40", Available: "35"}}},
				}
				res, err := r.conn.Write(context.Background(), events)
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range res {
					if w.Err != nil {
						t.Fatalf("event %s: %v", events[i].GetId(), w.Err)
					}
					for _, name := range strings.Fields(w.Ref) {
						ics := readBack(t, filepath.Join(r.out, name), p.Delimiters())
						g := ics[0].Groups[0]
						if g.Version != version || g.Results[0].Status != x12.StatusAccepted {
							t.Fatalf("%s: version %s, verdict %+v", name, g.Version, g.Results[0])
						}
					}
				}
			})
		}
	}
}

// readBack reads a file we wrote and checks its delimiters and envelope.
func readBack(t *testing.T, path string, d x12.Delimiters) []*x12.Interchange {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ics, err := x12.ReadAll(bytes.NewReader(b))
	if err != nil || len(ics) != 1 || ics[0].Err != nil {
		t.Fatalf("%s: %v %v\n%q", path, err, ics, b)
	}
	got := ics[0].Delimiters
	if got.Element != d.Element || got.Component != d.Component || got.Segment != d.Segment || got.Repetition != d.Repetition {
		t.Fatalf("%s: delimiters %+v, want %+v", path, got, d)
	}
	if d.Suffix == "" && d.Segment != '\n' && bytes.ContainsAny(b, "\r\n") {
		t.Fatalf("%s has line breaks, the profile says none", path)
	}
	return ics
}
