package controlplane_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/views"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestViewsAfterPrune: levels, prices and items whose events retention pruned are still
// in the views of a node that rebuilds them after the prune (from the compacted base
// and the rest of the log), equal to the live views of a node that folded them as they
// were committed.
func TestViewsAfterPrune(t *testing.T) {
	c := retentionCluster(t)
	applyDocs(t, c.Nodes[0], strings.ReplaceAll(shortRetention, "compact: [inventory.level]", "compact: [inventory.level, price, item]"))
	leader := c.Leader()
	base := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	var old []*eventv1.Event
	for i := range 20 {
		sku := fmt.Sprintf("P%d", i)
		old = append(old, stockLevel(sku, "WH9", fmt.Sprint(i), base),
			&eventv1.Event{Type: "price", Keys: map[string]string{"sku": sku},
				Payload: &eventv1.Event_Price{Price: &eventv1.Price{Sku: sku, PriceList: "retail", Currency: "EUR", Amount: fmt.Sprint(i), ValidFrom: timestamppb.New(base)}}},
			&eventv1.Event{Type: "item", Keys: map[string]string{"sku": sku},
				Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: sku, Name: "item " + sku}}})
	}
	// P0 moves twice: the compacted base must hold its newest level.
	old = append(old, stockLevel("P0", "WH9", "77", base.Add(time.Minute)))
	lastOld := viewEvents(t, leader, "erp", 1, old...)
	// Enough events after them for a key-index flush (a prune never passes one).
	for i := 1; i <= 18000; i += 2000 {
		ingestOnLeader(t, c, "a1", i, 2000)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "the old events pruned on every node", func() bool {
		for _, n := range c.Nodes {
			if lowWater(n) <= lastOld {
				return false
			}
		}
		return true
	})
	// The prunes list the events they compacted (the leader follows the log, and the
	// a1 levels' SKUs recur, so most of their pruned events need no record): the views
	// rebuilt below start from a base written that way. Right after an election a
	// leader's prunes compact every key until each follower has reported its build in
	// the new term (a few seconds), so wait for a listed one, giving each prune
	// something to remove.
	next := 18001
	controlplanetest.WaitFor(t, 60*time.Second, "a prune that listed its compacted events", func() bool {
		if cs := c.WaitLeader(nil).Pruner().CompactStats(); cs.Listed && cs.KeysFollowed > 0 {
			return true
		}
		ingestOnLeader(t, c, "a1", next, 2000)
		next += 2000
		return false
	})
	if _, _, err := c.Nodes[0].Store().Ledger().EventByID("erp-1"); !errors.Is(err, ledger.ErrPruned) {
		t.Fatalf("EventByID of a pruned event: %v, want ErrPruned", err)
	}
	c.WaitConverged()
	leader = c.WaitLeader(nil)
	last := leader.Store().Ledger().LastSeq()

	i := 0
	if c.Nodes[0] == leader {
		i = 1
	}
	c.Nodes[i].Stop()
	n := c.Restart(i)
	waitViews(t, leader.Views(), last)
	waitViews(t, n.Views(), last)
	if ok, diff := views.Equal(leader.ViewsState(), n.ViewsState()); !ok {
		t.Fatalf("views rebuilt after a prune differ from the live ones: %s", diff)
	}
	lv := n.Views().Levels([]string{"P0", "P7"}, []string{"WH9"})
	if len(lv) != 2 || lv[0].OnHand != "77" || lv[1].OnHand != "7" {
		t.Fatalf("levels of pruned events after a rebuild: %+v", lv)
	}
	if p := n.Views().Prices([]string{"P3"}, "retail"); len(p) != 1 || p[0].Amount != "3" {
		t.Fatalf("price of a pruned event after a rebuild: %+v", p)
	}
	if items, _ := n.Views().Items("", 100, func(sku string) bool { return strings.HasPrefix(sku, "P") }); len(items) != 20 {
		t.Fatalf("%d items of pruned events after a rebuild, want 20", len(items))
	}
}
