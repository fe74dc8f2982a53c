package partner_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// TestSubmitOrderRefusedOnLowDisk: while a node is short of disk a partner's order is
// refused with 503 and the reason, through the leader and through a follower (which
// forwards to the leader), and nothing is committed; once the disk is freed the same
// order is taken as new. The node's free space is a fake reading (fault injection).
func TestSubmitOrderRefusedOnLowDisk(t *testing.T) {
	var free atomic.Uint64
	free.Store(100 << 30)
	e := newEnvConfig(t, 3, orderDocs, func(c *controlplane.Config) {
		c.MinFreeDisk = 1 << 30
		if c.NodeID == "node-3" {
			c.DiskFree = func() (uint64, error) { return free.Load(), nil }
		}
	})
	key := e.key("shopb", 0)
	leader := e.cluster.WaitLeader(nil)
	var follower *controlplanetest.Server
	for _, n := range e.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx := context.Background()
	before := leader.Store().Ledger().LastSeq()
	free.Store(200 << 20)
	controlplanetest.WaitFor(t, 20*time.Second, "the leader refusing new events", func() bool {
		st, err := leader.Admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		return err == nil && st.Msg.GetWritesRefused() != ""
	})
	for _, node := range []*controlplanetest.Server{leader, follower} {
		_, err := e.client(node, key).SubmitOrder(ctx, connect.NewRequest(order("PO-DISK")))
		if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "not committed: disk space low: node node-3 has 200 MiB free") {
			t.Fatalf("order through %s while node-3 is short of disk: %v, want unavailable naming node-3", node.Config.NodeID, err)
		}
		res, body := e.post(node, "SubmitOrder", "Bearer "+key, order("PO-DISK"))
		if res.StatusCode != 503 || !strings.Contains(string(body), "not committed") {
			t.Fatalf("JSON order through %s: %d %s, want 503", node.Config.NodeID, res.StatusCode, body)
		}
	}
	if got := leader.Store().Ledger().LastSeq(); got != before {
		t.Fatalf("the ledger went from seq %d to %d while orders were refused", before, got)
	}
	free.Store(100 << 30)
	controlplanetest.WaitFor(t, 20*time.Second, "the order taken once the disk is freed", func() bool {
		res, err := e.client(follower, key).SubmitOrder(ctx, connect.NewRequest(order("PO-DISK")))
		if err == nil && res.Msg.GetDuplicate() {
			t.Fatalf("the order was taken as a duplicate: a refused order was committed")
		}
		return err == nil
	})
}
