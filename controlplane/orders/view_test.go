package orders_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/orders"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// testLog is a real ledger on disk that the test applies commands to as raft would.
type testLog struct {
	t     *testing.T
	l     *ledger.Ledger
	index uint64
	aseq  uint64
}

func newTestLog(t *testing.T) *testLog {
	t.Helper()
	l, err := ledger.Open(ledger.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return &testLog{t: t, l: l}
}

func (tl *testLog) apply(typ storev1.CommandType, m proto.Message) any {
	tl.t.Helper()
	p, err := proto.Marshal(m)
	if err != nil {
		tl.t.Fatal(err)
	}
	tl.index++
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(tl.index) * time.Second)
	res, err := tl.l.Apply(tl.index, at, &storev1.Command{Type: typ, Payload: p})
	if err != nil {
		tl.t.Fatalf("apply: %v", err)
	}
	return res
}

// ingest commits evs as one entry and returns the seq of the last one.
func (tl *testLog) ingest(evs ...*eventv1.Event) uint64 {
	tl.t.Helper()
	b := &storev1.IngestBatch{AgentId: "erp"}
	for _, ev := range evs {
		tl.aseq++
		ev.Id = fmt.Sprintf("ev-%d", tl.aseq)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: tl.aseq, Event: ev})
	}
	if r := tl.apply(storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b).(*storev1.IngestResult); int(r.GetCommitted()) != len(evs) {
		tl.t.Fatalf("committed %d of %d events: %v", r.GetCommitted(), len(evs), r)
	}
	return tl.l.LastSeq()
}

// levels commits n inventory levels in entries of 1,000: enough of them move the key
// index flush, which a prune never passes.
func (tl *testLog) levels(n int) {
	for i := 0; i < n; i += 1000 {
		evs := make([]*eventv1.Event, 0, 1000)
		for j := range 1000 {
			sku := fmt.Sprintf("S%d", (i+j)%50)
			evs = append(evs, &eventv1.Event{Type: canonical.TypeInventoryLevel, Keys: map[string]string{"sku": sku, "location": "WH1"},
				Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: fmt.Sprint(j)}}})
		}
		tl.ingest(evs...)
	}
}

// prune applies PRUNE_LEDGER with every order type cut at below, the rest at the last
// seq, until it is done.
func (tl *testLog) prune(below uint64, compact []string) {
	tl.t.Helper()
	m := &storev1.PruneLedger{DefaultBelow: tl.l.LastSeq(), Compact: compact}
	for _, typ := range slices.Sorted(slices.Values(orders.Types)) {
		m.Types = append(m.Types, &storev1.PruneCutoff{Type: typ, Below: below})
	}
	for more := true; more; {
		res := tl.apply(storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, m).(*storev1.PruneResult)
		if res.GetError() != "" {
			tl.t.Fatalf("prune: %s", res.GetError())
		}
		more = res.GetMore()
	}
	if low, _, _ := tl.l.TypesLowWater(orders.Types); low != below {
		tl.t.Fatalf("order types held from seq %d after the prune, want %d", low, below)
	}
}

// order and ack are partner order i and the ERP's acceptance of it.
func order(i int) *eventv1.Event {
	id := canonical.OrderID("shop", fmt.Sprintf("PO-%d", i))
	return &eventv1.Event{Type: canonical.TypeOrder, Keys: map[string]string{"order": id}, Payload: &eventv1.Event_Order{Order: &eventv1.Order{
		OrderNumber: id, Partner: "shop", PurchaseOrderNumber: fmt.Sprintf("PO-%d", i), Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "S1", Quantity: "1"}}}}}
}

func ack(i int) *eventv1.Event {
	id := canonical.OrderID("shop", fmt.Sprintf("PO-%d", i))
	return &eventv1.Event{Type: canonical.TypeOrderAck, Keys: map[string]string{"order": id}, Payload: &eventv1.Event_OrderAck{OrderAck: &eventv1.OrderAck{
		OrderNumber: id, ErpOrderNumber: fmt.Sprintf("SO-%d", i), Status: "accepted"}}}
}

// gatedSource is an orders.Source whose log reads wait while the gate is closed: fault
// injection, to hold the view back while the ledger moves on.
type gatedSource struct {
	orders.Source
	testutil.Gate
}

func (g *gatedSource) ScanRaw(from uint64, max int, fn func(ev ledger.RawEvent) error) (uint64, error) {
	g.Wait()
	return g.Source.ScanRaw(from, max, fn)
}

func run(t *testing.T, src orders.Source) *orders.View {
	t.Helper()
	v := orders.New(src, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return v
}

func waitSeq(t *testing.T, v *orders.View, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// summary is what a partner reads of every order in v: id, status, ERP number and seq,
// oldest first.
func summary(v *orders.View) []string {
	list, _ := v.List(orders.Filter{Limit: 1000})
	var out []string
	for i := len(list) - 1; i >= 0; i-- {
		o := list[i]
		out = append(out, fmt.Sprintf("%s %s %s %d", o.ID, o.Status, o.ERPOrderNumber, o.Seq))
	}
	return out
}

// TestPruneOvertakesOrderView holds an order view back while orders it has not read
// are committed and retention prunes them with some it has read. With the order types
// compacted, it merges the compacted base (the orders it skipped are there, accepted);
// without, it drops every order whose order event is gone (its memory follows
// retention). Either way it ends equal to a view built afresh from the ledger. Before,
// the view read the log below the prune's cutoff without noticing and lost the skipped
// orders, and kept pruned orders until the node restarted.
func TestPruneOvertakesOrderView(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact []string
		want    int // orders held at the end
	}{
		{"compacted", orders.Types, 20},
		{"not compacted", nil, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestLog(t)
			src := &gatedSource{Source: orders.LedgerSource(tl.l)}
			v := run(t, src)
			for i := range 10 {
				tl.ingest(order(i), ack(i))
			}
			waitSeq(t, v, tl.l.LastSeq())
			if v.Len() != 10 {
				t.Fatalf("%d orders before the prune, want 10", v.Len())
			}
			src.Close()
			var cut uint64
			for i := 10; i < 20; i++ {
				seq := tl.ingest(order(i))
				if i == 15 {
					cut = seq // orders 15-19 stay in the log
				}
				tl.ingest(ack(i))
			}
			tl.levels(30000)
			tl.prune(cut, tc.compact)
			if cut <= v.Seq()+1 {
				t.Fatalf("cutoff %d: the prune did not pass the view (at %d)", cut, v.Seq())
			}
			src.Open()
			waitSeq(t, v, tl.l.LastSeq())
			if v.Merges() == 0 {
				t.Fatal("the view did not merge the compacted base")
			}
			got := summary(v)
			if len(got) != tc.want {
				t.Fatalf("%d orders after the prune, want %d:\n%v", len(got), tc.want, got)
			}
			// ListOrders pages by seq: the orders merged from the base sit in seq order
			// with those folded from the log.
			list, _ := v.List(orders.Filter{Partner: "shop", Limit: 1000})
			if !slices.IsSortedFunc(list, func(a, b *orders.Order) int { return cmp.Compare(b.Seq, a.Seq) }) {
				t.Fatalf("the partner's orders are not newest first by seq: %v", got)
			}
			for _, o := range got {
				if _, status, _ := cutStatus(o); status != orders.StatusAccepted {
					t.Fatalf("order %s, want every order accepted", o)
				}
			}
			fresh := run(t, orders.LedgerSource(tl.l))
			waitSeq(t, fresh, tl.l.LastSeq())
			if want := summary(fresh); !slices.Equal(got, want) {
				t.Fatalf("the view overtaken by the prune holds\n%v\na view built afresh\n%v", got, want)
			}
			if tc.compact == nil && v.ByERPNumber("SO-3") != nil {
				t.Fatal("an order dropped by retention is still found by its ERP number")
			}
		})
	}
}

// TestOrderViewFollowsRetention: a view that keeps up with the log drops the orders
// whose order event retention removed, at the prune, without a restart.
func TestOrderViewFollowsRetention(t *testing.T) {
	tl := newTestLog(t)
	v := run(t, orders.LedgerSource(tl.l))
	var cut uint64
	for i := range 10 {
		seq := tl.ingest(order(i), ack(i))
		if i == 6 {
			cut = seq + 1 // orders 7-9 stay
		}
	}
	tl.levels(30000)
	waitSeq(t, v, tl.l.LastSeq())
	if v.Len() != 10 {
		t.Fatalf("%d orders before the prune, want 10", v.Len())
	}
	tl.prune(cut, nil)
	tl.ingest(order(10)) // the view reads again after the prune
	testutil.WaitFor(t, 20*time.Second, "the view to drop the pruned orders", func() bool { return v.Len() == 4 })
	for i := range 11 {
		id := canonical.OrderID("shop", fmt.Sprintf("PO-%d", i))
		if held := v.Get(id) != nil; held != (i >= 7) {
			t.Fatalf("order %d held %v after the prune below seq %d", i, held, cut)
		}
	}
	if v.Merges() != 0 {
		t.Fatalf("a view that kept up merged the base %d times", v.Merges())
	}
}

// cutStatus splits a summary line.
func cutStatus(line string) (id, status, rest string) {
	var seq uint64
	_, _ = fmt.Sscanf(line, "%s %s %s %d", &id, &status, &rest, &seq)
	return id, status, rest
}
