package controlplane_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/views"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// viewEvents commits evs as one batch of agent through the leader and returns the
// ledger seq of the last one (what a writer is told).
func viewEvents(t *testing.T, leader *controlplanetest.Server, agentID string, firstSeq int, evs ...*eventv1.Event) uint64 {
	t.Helper()
	b := &storev1.IngestBatch{AgentId: agentID}
	for i, ev := range evs {
		ev.Id = fmt.Sprintf("%s-%d", agentID, firstSeq+i)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(firstSeq + i), Event: ev})
	}
	res, err := leader.Store().Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	r := res.(*storev1.IngestResult)
	if int(r.GetCommitted()) != len(evs) {
		t.Fatalf("committed %d of %d: %v", r.GetCommitted(), len(evs), r)
	}
	return r.GetLastLedgerSeq()
}

func stockLevel(sku, loc, onHand string, occurred time.Time) *eventv1.Event {
	return &eventv1.Event{Type: "inventory.level", OccurredAt: timestamppb.New(occurred),
		Keys: map[string]string{"sku": sku, "location": loc},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
			Sku: sku, Location: loc, OnHand: onHand, Allocated: "0", Available: onHand, UnitOfMeasure: "EA"}}}
}

func waitViews(t *testing.T, v views.Reader, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// TestViewsFollowerReadsYourWrites: a level committed through the leader is in a
// follower's views once they reach the seq the write reported, through the Reader and
// through the admin API asked with min_seq on the follower; newer levels replace older
// ones per (sku, location), and an event that occurred earlier never overwrites.
func TestViewsFollowerReadsYourWrites(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	base := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	viewEvents(t, leader, "erp", 1, stockLevel("SKU-1", "WH1", "10", base), stockLevel("SKU-1", "WH2", "4", base))
	seq := viewEvents(t, leader, "erp", 3, stockLevel("SKU-1", "WH1", "7", base.Add(time.Minute)))

	fv := follower.Views()
	waitViews(t, fv, seq)
	got := fv.Levels([]string{"SKU-1"}, nil)
	if len(got) != 2 || got[0].Location != "WH1" || got[0].OnHand != "7" || got[0].Seq != seq || got[1].Location != "WH2" || got[1].OnHand != "4" {
		t.Fatalf("follower levels after seq %d = %+v", seq, got)
	}
	if got[0].At.IsZero() {
		t.Errorf("level has no commit time: %+v", got[0])
	}

	// A late event that occurred before the held one: committed, never folded over it.
	seq2 := viewEvents(t, leader, "wms", 1, stockLevel("SKU-1", "WH1", "99", base), stockLevel("SKU-2", "WH1", "1", base))

	// The admin API on the follower (no redirect: any node answers from its views).
	fc := adminAt(t, c.Nodes[0].AdminConfigPath(), follower.Addr())
	res, err := fc.GetInventory(context.Background(), connect.NewRequest(&adminv1.GetInventoryRequest{Skus: []string{"SKU-1", "SKU-2"}, Locations: []string{"WH1"}, MinSeq: seq2}))
	if err != nil {
		t.Fatalf("GetInventory on the follower: %v", err)
	}
	if res.Msg.GetViewsSeq() < seq2 {
		t.Fatalf("views_seq %d < min_seq %d", res.Msg.GetViewsSeq(), seq2)
	}
	var rows []string
	for _, l := range res.Msg.GetLevels() {
		rows = append(rows, fmt.Sprintf("%s@%s=%s/%d", l.GetSku(), l.GetLocation(), l.GetOnHand(), l.GetSeq()))
	}
	want := fmt.Sprint([]string{fmt.Sprintf("SKU-1@WH1=7/%d", seq), fmt.Sprintf("SKU-2@WH1=1/%d", seq2)})
	if fmt.Sprint(rows) != want {
		t.Fatalf("GetInventory = %v, want %v", rows, want)
	}
}

// TestViewsDeterministicAndRebuilt: after a mix of events through the leader, every
// node's views hold the same state; a node restarted from its data dir rebuilds views
// equal to the live ones of the others.
func TestViewsDeterministicAndRebuilt(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	base := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	aseq := 1
	for i := range 12 {
		var evs []*eventv1.Event
		for j := range 30 {
			k := i*30 + j
			evs = append(evs, stockLevel(fmt.Sprintf("S%d", k%17), fmt.Sprintf("WH%d", k%3), fmt.Sprint(k), base.Add(time.Duration(k%7)*time.Second)))
			if k%5 == 0 {
				evs = append(evs, &eventv1.Event{Type: "price", Keys: map[string]string{"sku": fmt.Sprintf("S%d", k%17)},
					Payload: &eventv1.Event_Price{Price: &eventv1.Price{Sku: fmt.Sprintf("S%d", k%17), PriceList: "retail", Currency: "EUR", Amount: fmt.Sprint(k),
						ValidFrom: timestamppb.New(base.Add(time.Duration(k%4) * time.Hour))}}})
			}
			if k%9 == 0 {
				evs = append(evs, &eventv1.Event{Type: "item", Keys: map[string]string{"sku": fmt.Sprintf("S%d", k%17)},
					Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: fmt.Sprintf("S%d", k%17), Name: fmt.Sprint("item ", k)}}})
			}
			if k%4 == 0 {
				evs = append(evs, &eventv1.Event{Type: "order", Keys: map[string]string{"order": fmt.Sprint(k)},
					Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: fmt.Sprint(k)}}})
			}
		}
		viewEvents(t, leader, "erp", aseq, evs...)
		aseq += len(evs)
	}
	c.WaitConverged()
	last := leader.Store().Ledger().LastSeq()
	for _, n := range c.Nodes {
		waitViews(t, n.Views(), last)
	}
	for _, n := range c.Nodes[1:] {
		if ok, diff := views.Equal(c.Nodes[0].ViewsState(), n.ViewsState()); !ok {
			t.Fatalf("views of %s and %s differ: %s", c.Nodes[0].Config.NodeID, n.Config.NodeID, diff)
		}
	}
	if st := leader.ViewsState().Stats(); st.Levels != 17*3 || st.Items != 17 {
		t.Errorf("stats = %+v", st)
	}

	// Restart a follower: its views are rebuilt from its ledger.
	i := 0
	if c.Nodes[0] == leader {
		i = 1
	}
	c.Nodes[i].Stop()
	n := c.Restart(i)
	waitViews(t, n.Views(), last)
	if ok, diff := views.Equal(leader.ViewsState(), n.ViewsState()); !ok {
		t.Fatalf("views rebuilt on restart differ from the leader's live ones: %s", diff)
	}
}

// TestViewsOff: a node started without views answers the views' API calls with a
// message that names the flag.
func TestViewsOff(t *testing.T) {
	s := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.DisableViews = true })
	if s.Views() != nil {
		t.Fatal("Views() is not nil with DisableViews")
	}
	_, err := s.Admin.GetInventory(context.Background(), connect.NewRequest(&adminv1.GetInventoryRequest{Skus: []string{"A"}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("GetInventory with views off: %v", err)
	}
}
