package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

const archiveSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestArchiveReplayAfterLeaderChange: on a 3-node cluster every node archives the same
// pruned events (as each node's Apply of a prune calls the archive), the leader stops,
// and ReplayArchive on the new leader sends each archived level once, from its own
// archive, under its original id. ListArchive answers on a follower for its own copy.
func TestArchiveReplayAfterLeaderChange(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) {
		cfg.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	m, err := samplemarket.New(samplemarket.Config{Secret: archiveSecret})
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(m)
	t.Cleanup(ms.Close)
	leader := c.WaitLeader(nil)
	applyDocs(t, leader, fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available, "id": event.id}
`, ms.URL, archiveSecret))

	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var evs []*eventv1.CommittedEvent
	for i := range 25 {
		sku := fmt.Sprintf("OLD-%02d", i)
		evs = append(evs, &eventv1.CommittedEvent{Seq: uint64(500 + i), CommittedAt: timestamppb.New(at.Add(time.Duration(i) * time.Second)), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev_pruned_%02d", i), Type: "inventory.level", Keys: map[string]string{"sku": sku},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: "1", Available: "1"}},
		}})
	}
	for _, n := range c.Nodes {
		if err := n.Archive().Archive(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}

	leader.Stop()
	next := c.WaitLeader(leader)
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n.Running() && n != next {
			follower = n
		}
	}
	// An admin client of the new leader, and one of the follower.
	clientOf := func(n *controlplanetest.Server) (adminv1connect.AdminServiceClient, func()) {
		cfg, err := cliconfig.Load(c.Nodes[0].AdminConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Addr, cfg.Addrs = n.Addr(), nil
		cl, closeFn, err := cfg.AdminClient()
		if err != nil {
			t.Fatal(err)
		}
		return cl, closeFn
	}
	fc, closeF := clientOf(follower)
	defer closeF()
	ls, err := fc.ListArchive(context.Background(), connect.NewRequest(&adminv1.ListArchiveRequest{Verify: true}))
	if err != nil {
		t.Fatal(err)
	}
	if ls.Msg.GetNode() != follower.Config.NodeID || len(ls.Msg.GetFiles()) != 1 || ls.Msg.GetFiles()[0].GetEvents() != 25 || ls.Msg.GetFiles()[0].GetDamage() != "" {
		t.Fatalf("ListArchive on follower %s: %v", follower.Config.NodeID, ls.Msg)
	}

	lc, closeL := clientOf(next)
	defer closeL()
	var last *adminv1.ReplayArchiveResponse
	controlplanetest.WaitFor(t, 60*time.Second, "an archive replay on the new leader", func() bool {
		stream, err := lc.ReplayArchive(context.Background(), connect.NewRequest(&adminv1.ReplayArchiveRequest{
			Route: "shop-stock", From: timestamppb.New(at.Add(-time.Hour)),
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for stream.Receive() {
			last = stream.Msg()
		}
		if err := stream.Err(); err != nil {
			// The new leader's delivery worker may not run yet.
			if ce := new(connect.Error); errors.As(err, &ce) && ce.Code() == connect.CodeUnavailable && strings.Contains(err.Error(), "no delivery worker") {
				return false
			}
			t.Fatalf("archive replay: %v", err)
		}
		return true
	})
	if !last.GetDone() || last.GetNode() != next.Config.NodeID || last.GetTotal() != 25 || last.GetSent() != 25 {
		t.Fatalf("last progress %v; want done on %s with 25 of 25 sent", last, next.Config.NodeID)
	}
	ids := map[string]int{}
	for _, r := range m.Requests() {
		ids[r.ID]++
	}
	for _, e := range evs {
		if ids[e.GetEvent().GetId()] != 1 {
			t.Errorf("%s delivered %d times, want once", e.GetEvent().GetId(), ids[e.GetEvent().GetId()])
		}
	}
	if len(ids) != len(evs) {
		t.Errorf("%d distinct ids delivered, want %d", len(ids), len(evs))
	}
}
