package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestDiskGuardRefusesAndResumes: a follower short of disk makes the leader refuse new
// events from a real agent; the agent keeps them in its outbox and says why, cluster
// status names the node; once the disk is freed every event is committed, once. The
// follower's free space is a fake reading (fault injection: a test cannot fill a disk);
// everything else is real.
func TestDiskGuardRefusesAndResumes(t *testing.T) {
	var free atomic.Uint64
	free.Store(100 << 30)
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) {
		cfg.MinFreeDisk = 1 << 30
		if i == 2 {
			cfg.DiskFree = func() (uint64, error) { return free.Load(), nil }
		}
	})
	short := c.Nodes[2].Config.NodeID
	c.WaitConverged()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tok, err := c.Leader().Admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: "disk-agent"}))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: c.Addrs(), EnrollToken: tok.Msg.GetToken(),
		LocalAddr: "-", Logger: controlplanetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var run sync.WaitGroup
	run.Go(func() { _ = a.Run(ctx) })
	defer func() { cancel(); run.Wait() }()

	publish := func(from, n int) uint64 {
		t.Helper()
		var evs []*eventv1.Event
		for i := from; i < from+n; i++ {
			evs = append(evs, &eventv1.Event{Id: fmt.Sprintf("disk-%d", i), Type: "inventory.level", Keys: map[string]string{"sku": fmt.Sprintf("D%d", i), "location": "WH1"},
				Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: fmt.Sprintf("D%d", i), Location: "WH1", OnHand: "1"}}})
		}
		res, err := a.Publish(ctx, "", evs)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		return res.GetLastSeq()
	}
	committed := func(seq uint64) func() bool {
		return func() bool { return a.Status().GetCommittedSeq() >= seq }
	}
	controlplanetest.WaitFor(t, 30*time.Second, "the first events committed", committed(publish(0, 10)))

	status := func() *adminv1.GetClusterStatusResponse {
		res, err := c.Leader().Admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		if err != nil {
			return nil
		}
		return res.Msg
	}
	// Every node's free disk is in cluster status on the leader.
	controlplanetest.WaitFor(t, 20*time.Second, "every node's free disk in cluster status", func() bool {
		st := status()
		if st == nil || st.GetWritesRefused() != "" {
			return false
		}
		for _, p := range st.GetPeers() {
			if p.GetDiskFreeBytes() == 0 || p.GetDiskMinFreeBytes() != 1<<30 {
				return false
			}
		}
		return len(st.GetPeers()) == 3
	})

	free.Store(300 << 20)
	controlplanetest.WaitFor(t, 20*time.Second, "the leader refusing new events", func() bool {
		st := status()
		return st != nil && strings.Contains(st.GetWritesRefused(), "node "+short+" has 300 MiB free")
	})
	before := c.Leader().Store().Ledger().LastSeq()
	last := publish(10, 10) // taken by the agent's outbox: it is the agent's disk
	var lastErr string
	controlplanetest.WaitFor(t, 20*time.Second, "the agent reporting the refusal", func() bool {
		if e := a.Status().GetLastError(); e != lastErr {
			lastErr = e
			t.Logf("agent: %s", e)
		}
		return strings.Contains(lastErr, "disk space low: node "+short)
	})
	if got := c.Leader().Store().Ledger().LastSeq(); got != before {
		t.Fatalf("the ledger went from seq %d to %d while new events were refused", before, got)
	}
	if st := a.Status(); st.GetCommittedSeq() >= last {
		t.Fatalf("agent committed seq %d reached %d while refused", st.GetCommittedSeq(), last)
	}

	free.Store(100 << 30)
	controlplanetest.WaitFor(t, 30*time.Second, "the refused events committed once the disk is freed", committed(last))
	c.WaitConverged()
	for _, n := range c.Nodes {
		for i := range 20 {
			if _, _, err := n.Store().Ledger().EventByID(fmt.Sprintf("disk-%d", i)); err != nil {
				t.Fatalf("%s: event disk-%d: %v", n.Config.NodeID, i, err)
			}
		}
		if got := n.Store().Ledger().LastSeq(); got != before+10 {
			t.Fatalf("%s: last seq %d, want %d: each refused event committed exactly once", n.Config.NodeID, got, before+10)
		}
	}
	if st := status(); st == nil || st.GetWritesRefused() != "" {
		t.Fatalf("cluster status after the disk was freed: %v", st)
	}
}
