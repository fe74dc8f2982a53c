package ediview

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
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
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: index*10_000 + uint64(i), Event: ev})
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

	v := New(views.LedgerSource{L: l, Types: Types}, nil)
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

// prune applies a PRUNE_LEDGER of m to l from index until it reports no more, and
// returns the next index.
func prune(t *testing.T, l *ledger.Ledger, index uint64, m *storev1.PruneLedger) uint64 {
	t.Helper()
	p, _ := proto.Marshal(m)
	for ; ; index++ {
		res, err := l.Apply(index, t0.Add(time.Duration(index)*time.Second), &storev1.Command{Type: storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, Payload: p})
		if err != nil {
			t.Fatalf("prune: %v", err)
		}
		r := res.(*storev1.PruneResult)
		if r.GetError() != "" {
			t.Fatalf("prune refused: %s", r.GetError())
		}
		if !r.GetMore() {
			return index + 1
		}
	}
}

// prunedLedger commits 20 interchanges, 20,000 inventory levels, then 20 more
// interchanges, and prunes them with m; it returns the ledger and the interchanges
// held after the prune, as the view lists them.
func prunedLedger(t *testing.T, m *storev1.PruneLedger) (*ledger.Ledger, map[string]bool) {
	t.Helper()
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	index := uint64(1)
	var ics []*eventv1.Event
	for i := range 20 {
		ics = append(ics, ic("bigbox", "out", fmt.Sprintf("%09d", i+1), "sent", t0, grp("IB", "1", "846", "", "", time.Time{})))
	}
	ingest(t, l, index, ics...)
	for range 5 {
		index++
		evs := make([]*eventv1.Event, 4000)
		for j := range evs {
			evs[j] = &eventv1.Event{Id: fmt.Sprintf("lvl-%d-%d", index, j), Type: canonical.TypeInventoryLevel,
				Keys: map[string]string{"sku": fmt.Sprintf("S-%d", j%50)}, Source: &eventv1.Source{Agent: "a1"}}
		}
		ingest(t, l, index, evs...)
	}
	ics = ics[:0]
	for i := range 20 {
		ics = append(ics, ic("acme", "out", fmt.Sprintf("%09d", i+1), "sent", t0, grp("IB", "1", "846", "", "", time.Time{})))
	}
	index++
	ingest(t, l, index, ics...)
	prune(t, l, index+1, m)
	held := map[string]bool{}
	low, _, err := l.TypesLowWater(Types)
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := l.ListEvents(ledger.Filter{Type: canonical.TypeEdiInterchange}, low, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		x := ev.GetEvent().GetEdiInterchange()
		held[x.GetPartner()+":"+normControl(x.GetControl())] = true
	}
	return l, held
}

func listed(t *testing.T, v *View) map[string]bool {
	t.Helper()
	got, _, err := v.List(Filter{}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, in := range got {
		out[in.IC.GetPartner()+":"+normControl(in.IC.GetControl())] = true
	}
	return out
}

// TestViewOnPrunedLedger: the view reads what retention kept. A view started on an
// empty ledger into which a pruned snapshot is then restored (a node joining) starts
// over from the restored ledger's low-water mark; and a view whose type is kept longer
// than the inventory views' types reads from its own type's mark. Before, the first
// retried from seq 1 forever and the second was refused at the views' mark.
func TestViewOnPrunedLedger(t *testing.T) {
	at := timestamppb.New(t0.Add(time.Hour))

	t.Run("restored after it started", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // before the ledgers close
		src, held := prunedLedger(t, &storev1.PruneLedger{DefaultBelow: 19_000, ComputedAt: at})
		if len(held) != 20 {
			t.Fatalf("the prune kept %d interchanges, want the last 20", len(held))
		}
		joiner, err := ledger.Open(ledger.Options{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { joiner.Close() }) // after the view stops
		v := New(views.LedgerSource{L: joiner, Types: Types}, nil)
		go v.Run(ctx)
		snap, err := src.OpenSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		snap.Release()
		if err := joiner.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "the view past the restored ledger's end", func() bool { return v.Seq() > joiner.LastSeq() })
		if got := listed(t, v); !maps.Equal(got, held) {
			t.Fatalf("view holds %v, want %v", got, held)
		}
	})

	t.Run("its type kept longer than the views'", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var cuts []*storev1.PruneCutoff
		for _, typ := range slices.Sorted(slices.Values(views.Types)) {
			cuts = append(cuts, &storev1.PruneCutoff{Type: typ, Below: 19_000})
		}
		l, held := prunedLedger(t, &storev1.PruneLedger{Types: cuts, DefaultBelow: 1, ComputedAt: at})
		if len(held) != 40 {
			t.Fatalf("the prune kept %d interchanges, want all 40", len(held))
		}
		v := New(views.LedgerSource{L: l, Types: Types}, nil)
		go v.Run(ctx)
		testutil.WaitFor(t, 10*time.Second, "the view past the ledger's end", func() bool { return v.Seq() > l.LastSeq() })
		if got := listed(t, v); !maps.Equal(got, held) {
			t.Fatalf("view holds %v, want %v", got, held)
		}
	})
}
