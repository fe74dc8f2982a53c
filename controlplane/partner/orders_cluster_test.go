package partner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// TestSubmitOrderLeaderKilled: orders answered through a follower (forwarded to the
// leader) survive the leader being stopped right after the last answer; sent again to
// the new cluster they are duplicates; the ledger holds each once; the stopped node,
// restarted, rebuilds its order view from the ledger; each order's "received" was told
// once (one order.status event), whichever leader committed it.
func TestSubmitOrderLeaderKilled(t *testing.T) {
	e := newEnv(t, 3, orderDocs)
	key := e.key("shopb", 0)
	leader := e.cluster.WaitLeader(nil)
	var follower *controlplanetest.Server
	li := -1
	for i, n := range e.nodes {
		if n == leader {
			li = i
		} else if follower == nil {
			follower = n
		}
	}
	ctx := context.Background()
	c := e.client(follower, key)
	const n = 20
	ids := map[string]bool{}
	for i := range n {
		res, err := c.SubmitOrder(ctx, connect.NewRequest(order(fmt.Sprintf("PO-K%d", i))))
		if err != nil {
			t.Fatal(err)
		}
		ids[res.Msg.GetOrderId()] = true
	}
	leader.Stop() // a clean stop in process; the real binary is SIGKILLed in the e2e test
	next := e.cluster.WaitLeader(leader)
	var other *controlplanetest.Server
	for _, x := range e.nodes {
		if x != leader && x != follower {
			other = x
		}
	}
	c2 := e.client(other, key)
	for i := range n {
		var res *connect.Response[partnerv1.SubmitOrderResponse]
		var err error
		// The new leader may still be settling: a refused commit is retried.
		controlplanetest.WaitFor(t, 10*time.Second, "resubmission answered", func() bool {
			res, err = c2.SubmitOrder(ctx, connect.NewRequest(order(fmt.Sprintf("PO-K%d", i))))
			return err == nil || connect.CodeOf(err) != connect.CodeUnavailable
		})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Msg.GetDuplicate() || !ids[res.Msg.GetOrderId()] {
			t.Fatalf("PO-K%d resent to %s (leader %s): %v, want a duplicate of the order answered before", i, other.Config.NodeID, next.Config.NodeID, res.Msg)
		}
	}
	count := func(s *controlplanetest.Server) map[string]int {
		got := map[string]int{}
		for _, ev := range orderEvents(t, s, "order", "") {
			got[ev.GetKeys()["order"]]++
		}
		return got
	}
	got := count(next)
	for id := range ids {
		if got[id] != 1 {
			t.Fatalf("order %s is %d times in the ledger, want once (%v)", id, got[id], got)
		}
	}
	if len(got) != n {
		t.Fatalf("ledger holds %d orders, want %d", len(got), n)
	}
	restarted := e.cluster.Restart(li)
	e.nodes = e.cluster.Nodes
	controlplanetest.WaitFor(t, 20*time.Second, "the restarted node's order view", func() bool {
		return restarted.Orders() != nil && restarted.Orders().Len() == n
	})
	for id := range ids {
		if o := restarted.Orders().Get(id); o == nil || o.Status != "received" || o.Partner != "shopb" {
			t.Fatalf("restarted node's view of %s: %+v", id, o)
		}
	}
	controlplanetest.WaitFor(t, 20*time.Second, "one order.status per order", func() bool {
		return len(orderEvents(t, next, "order.status", "")) >= n
	})
	told := map[string]int{}
	for _, ev := range orderEvents(t, next, "order.status", "") {
		told[ev.GetOrderStatus().GetOrderNumber()]++
	}
	for id := range ids {
		if told[id] != 1 {
			t.Fatalf("order %s told %d times, want once", id, told[id])
		}
	}
	if _, ok := ids[canonical.OrderID("shopb", "PO-K0")]; !ok {
		t.Fatal("order ids are not canonical.OrderID")
	}
}
