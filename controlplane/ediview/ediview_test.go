package ediview

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/views"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

var t0 = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

// ingest commits evs to a real in-memory ledger as one raft entry.
func ingest(t *testing.T, l *ledger.Ledger, index uint64, evs ...*eventv1.Event) {
	t.Helper()
	b := &storev1.IngestBatch{AgentId: "a1"}
	for i, ev := range evs {
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: index*100 + uint64(i), Event: ev})
	}
	p, _ := proto.Marshal(b)
	res, err := l.Apply(index, t0.Add(time.Duration(index)*time.Second), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, Payload: p})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if r := res.(*storev1.IngestResult); int(r.GetCommitted()) != len(evs) {
		t.Fatalf("committed %d of %d: %v", r.GetCommitted(), len(evs), r)
	}
}

func ic(partner, dir, control, status string, at time.Time, groups ...*eventv1.EdiGroup) *eventv1.Event {
	x := &eventv1.EdiInterchange{Partner: partner, Direction: dir, Control: control, Status: status, At: timestamppb.New(at), Groups: groups,
		File: partner + "-" + control + ".x12"}
	b, _ := proto.Marshal(x)
	return &eventv1.Event{Id: fmt.Sprintf("edi:%s:%s:%s:%x", partner, dir, control, len(b)*7+len(groups)), Type: canonical.TypeEdiInterchange,
		Keys: map[string]string{"edi_interchange": partner + ":" + dir + ":" + control}, Source: &eventv1.Source{Agent: "a1"},
		Payload: &eventv1.Event_EdiInterchange{EdiInterchange: x}}
}

func grp(fid, control, set, po, ack string, due time.Time) *eventv1.EdiGroup {
	g := &eventv1.EdiGroup{FunctionalId: fid, Control: control, Version: "004010", Ack: ack, AckKind: "997",
		Sets: []*eventv1.EdiSet{{Id: set, Control: "0001", PurchaseOrderNumber: po, Order: canonical.OrderID("bigbox", po), Status: ack}}}
	if ack != "" {
		g.AckAt = timestamppb.New(t0.Add(time.Minute))
	}
	if !due.IsZero() {
		g.AckDue = timestamppb.New(due)
	}
	return g
}

// TestViewFoldsStatesOverdueAndChain: a real ledger with an 850 received and
// acknowledged, an 855 sent then accepted (and its older "sent" state arriving again
// afterwards, which must not hide the acceptance), and an 856 sent whose 997 is due at
// t0+1h: before that it is pending, after it overdue, through List, State filters,
// OverdueByPartner, OrderChain and the EDIService handlers; paging returns every
// interchange once.
func TestViewFoldsStatesOverdueAndChain(t *testing.T) {
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	po := "4500098765"
	due := t0.Add(time.Hour)
	in850 := ic("bigbox", "in", "000004711", "accepted", t0, grp("PO", "4711", "850", po, "A", time.Time{}))
	in850.GetEdiInterchange().AckControl = "000000001"
	sent855 := ic("bigbox", "out", "000000002", "sent", t0.Add(2*time.Minute), grp("PR", "3", "855", po, "", due))
	acked855 := ic("bigbox", "out", "000000002", "sent", t0.Add(2*time.Minute), grp("PR", "3", "855", po, "A", due))
	sent856 := ic("bigbox", "out", "000000010", "sent", t0.Add(3*time.Minute), grp("SH", "11", "856", po, "", due))
	other := ic("acme", "out", "000000005", "sent", t0.Add(4*time.Minute), grp("IB", "6", "846", "", "", time.Time{}))
	ingest(t, l, 1, in850, sent855)
	ingest(t, l, 2, acked855)
	ingest(t, l, 3, sent856, other)
	late := proto.Clone(sent855).(*eventv1.Event)
	late.Id += "-again"
	ingest(t, l, 4, late)

	v := New(views.LedgerSource{L: l}, nil)
	now := t0.Add(30 * time.Minute)
	v.now = func() time.Time { return now }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go v.Run(ctx)
	testutil.WaitFor(t, 5*time.Second, "the view at the ledger's end", func() bool { return v.Seq() > l.LastSeq() })

	list := func(f Filter) string {
		got, _, err := v.List(f, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, in := range got {
			s = append(s, in.IC.GetPartner()+":"+in.IC.GetDirection()+":"+normControl(in.IC.GetControl())+"="+State(in.IC, now))
		}
		return strings.Join(s, ",")
	}
	if got, want := list(Filter{Partner: "bigbox"}), "bigbox:out:10=pending,bigbox:out:2=A,bigbox:in:4711=A"; got != want {
		t.Fatalf("at +30m: %s, want %s", got, want)
	}
	if len(v.OverdueByPartner()) != 0 {
		t.Fatalf("overdue before the due time: %v", v.OverdueByPartner())
	}
	now = t0.Add(2 * time.Hour)
	if got, want := list(Filter{Partner: "bigbox", State: "overdue"}), "bigbox:out:10=overdue"; got != want {
		t.Fatalf("overdue at +2h: %s, want %s", got, want)
	}
	if got := v.OverdueByPartner(); got["bigbox"] != 1 || len(got) != 1 {
		t.Fatalf("OverdueByPartner %v", got)
	}
	if got, want := list(Filter{Order: po, Direction: "out"}), "bigbox:out:10=overdue,bigbox:out:2=A"; got != want {
		t.Fatalf("by PO: %s, want %s", got, want)
	}
	// The chain of the order, by its Crossdock id.
	var chain []string
	for _, s := range v.OrderChain(canonical.OrderID("bigbox", po)) {
		chain = append(chain, s.Set+"="+s.State)
	}
	if got, want := strings.Join(chain, ","), "850=A,997=A,855=A,856=overdue"; got != want {
		t.Fatalf("chain %s, want %s", got, want)
	}
	// Paging: one at a time, each once, newest first.
	var paged []string
	token := ""
	for range 10 {
		got, next, err := v.List(Filter{}, 1, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range got {
			paged = append(paged, normControl(in.IC.GetControl()))
		}
		if token = next; token == "" {
			break
		}
	}
	if got := strings.Join(paged, ","); got != "5,10,2,4711" {
		t.Fatalf("pages %s", got)
	}
	// The service answers the same.
	svc := &Service{View: v}
	res, err := svc.GetOrderEDI(ctx, connect.NewRequest(&adminv1.GetOrderEDIRequest{Order: po}))
	if err != nil || len(res.Msg.GetSteps()) != 4 || res.Msg.GetSteps()[3].GetState() != "overdue" || res.Msg.GetSteps()[3].GetAckDue() == nil {
		t.Fatalf("GetOrderEDI: %v %v", res, err)
	}
	lr, err := svc.ListInterchanges(ctx, connect.NewRequest(&adminv1.ListInterchangesRequest{Partner: "bigbox", State: "overdue"}))
	if err != nil || len(lr.Msg.GetInterchanges()) != 1 || lr.Msg.GetInterchanges()[0].GetGroupStates()[0] != "overdue" {
		t.Fatalf("ListInterchanges: %v %v", lr, err)
	}
	if _, err := svc.ListInterchanges(ctx, connect.NewRequest(&adminv1.ListInterchangesRequest{PageToken: "garbage"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad token: %v", err)
	}
}
