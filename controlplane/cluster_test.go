package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/store"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func level(sku string, n int) *eventv1.Event {
	return &eventv1.Event{
		Source: &eventv1.Source{Position: fmt.Sprintf("%s:%d", sku, n)},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
			Sku: sku, Location: "WH1", OnHand: fmt.Sprint(n),
		}}}
}

// ingest proposes a batch of n events for agent directly through raft on node s.
func ingest(ctx context.Context, s *controlplanetest.Server, agentID string, from, n int) error {
	return resendAt(ctx, s, agentID, from, n, 0)
}

// resendAt is ingest with the events' agent seqs moved up by seqOffset: the same
// events (ids and content) again, under seqs the agent has not committed.
func resendAt(ctx context.Context, s *controlplanetest.Server, agentID string, from, n, seqOffset int) error {
	b := &storev1.IngestBatch{AgentId: agentID}
	for i := from; i < from+n; i++ {
		ev := level(fmt.Sprintf("S%d", i%13), i)
		ev.Type, ev.Id = "inventory.level", fmt.Sprintf("%s-%d", agentID, i)
		ev.Keys = map[string]string{"sku": ev.GetInventoryLevel().GetSku(), "location": "WH1"}
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(i + seqOffset), Event: ev})
	}
	_, err := s.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	return err
}

func TestClusterJoinAndPeers(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	res, err := c.Nodes[0].Admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.GetPeers()) != 3 {
		t.Fatalf("peers = %v", res.Msg.GetPeers())
	}
	roles := map[string]int{}
	for _, p := range res.Msg.GetPeers() {
		roles[p.GetRole()]++
		if p.GetApiAddress() == "" {
			t.Errorf("peer %s has no API address", p.GetId())
		}
	}
	if roles["leader"] != 1 || roles["follower"] != 2 {
		t.Fatalf("roles = %v", roles)
	}
	if err := ingest(context.Background(), leader, "a1", 1, 100); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged()
}

// TestAgentFollowsLeaderAcrossFailover streams from an agent that knows only some of
// the control plane's addresses, stops the leader mid-stream, and checks every event is
// committed exactly once on the surviving nodes:
//
//   - follower: the agent knows one follower's address only. It must follow the
//     follower's redirect to the leader, and after the leader is gone find the new
//     leader through that follower again.
//   - killed+survivor: the agent knows the leader (the node that will be stopped) and
//     one survivor; after the stop it must move on to the survivor.
func TestAgentFollowsLeaderAcrossFailover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers func(leader, survivor *controlplanetest.Server) []string
	}{
		{"follower", func(_, survivor *controlplanetest.Server) []string { return []string{survivor.Addr()} }},
		{"killed+survivor", func(leader, survivor *controlplanetest.Server) []string {
			return []string{leader.Addr(), survivor.Addr()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { agentFollowsLeader(t, tc.servers) })
	}
}

func agentFollowsLeader(t *testing.T, servers func(leader, survivor *controlplanetest.Server) []string) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	tokRes, err := leader.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: "wh-1"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := servers(leader, follower)
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: addrs, EnrollToken: tokRes.Msg.GetToken(),
		LocalAddr: "-", Logger: controlplanetest.Logger(t), BatchMaxEvents: 100})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const total = 6000
	publish := func(from, to int) {
		for i := from; i < to; i += 200 {
			var evs []*eventv1.Event
			for j := i; j < min(i+200, to); j++ {
				evs = append(evs, level(fmt.Sprintf("S%d", j%50), j))
			}
			if _, err := a.Publish(ctx, "", evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, total/2)
	controlplanetest.WaitFor(t, 30*time.Second, "some events committed", func() bool { return leader.Store().Ledger().LastSeq() > 500 })
	// The stream goes to the leader, whatever address the agent was given.
	if st := a.Status(); st.GetUplinkState() != "connected" || st.GetServer() != leader.Addr() {
		t.Fatalf("agent given %v streams to %q (state %s); want the leader %s", addrs, st.GetServer(), st.GetUplinkState(), leader.Addr())
	}
	leader.Stop()
	// The stop must cut into the stream: events of the first half still pending.
	if n := leader.Store().Ledger().LastSeq(); n >= total/2 {
		t.Fatalf("all %d events of the first half were committed before the leader stopped: the failover came too late to test anything", n)
	}
	publish(total/2, total)
	newLeader := c.WaitLeader(leader)
	controlplanetest.WaitFor(t, 60*time.Second, "all events committed", func() bool {
		return newLeader.Store().Ledger().LastSeq() >= total && a.Status().GetOutbox().GetPendingEvents() == 0
	})
	if got := newLeader.Store().Ledger().LastSeq(); got != total {
		t.Fatalf("ledger holds %d events, want exactly %d", got, total)
	}
	if st := a.Status(); st.GetServer() != newLeader.Addr() {
		t.Fatalf("after the failover the agent streams to %q; want the new leader %s", st.GetServer(), newLeader.Addr())
	}
	checkPerKeyOrder(t, newLeader)
	c.WaitConverged()
}

func checkPerKeyOrder(t *testing.T, s *controlplanetest.Server) {
	t.Helper()
	evs, _, err := s.Store().Ledger().ListEvents(ledgerFilter(), 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	seen := map[string]bool{}
	for _, ce := range evs {
		ev := ce.GetEvent()
		if seen[ev.GetId()] {
			t.Fatalf("event %s committed twice", ev.GetId())
		}
		seen[ev.GetId()] = true
		var n int
		fmt.Sscan(ev.GetInventoryLevel().GetOnHand(), &n)
		k := ev.GetKeys()["sku"]
		if prev, ok := last[k]; ok && n <= prev {
			t.Fatalf("sku %s: %d committed after %d", k, n, prev)
		}
		last[k] = n
	}
}

// TestPartitionMinorityCommitsNothing isolates the leader: it can commit nothing, the
// majority elects a leader and commits; after healing every node has the same ledger.
func TestPartitionMinorityCommitsNothing(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	old := c.Leader()
	if err := ingest(context.Background(), old, "a1", 1, 50); err != nil {
		t.Fatal(err)
	}
	var rest []*controlplanetest.Server
	for _, n := range c.Nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	c.Faults.Partition(controlplanetest.RaftAddrs(old), controlplanetest.RaftAddrs(rest...))
	before := old.Store().Ledger().LastSeq()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := ingest(ctx, old, "a1", 51, 50)
	cancel()
	if err == nil {
		t.Fatal("the isolated old leader committed a write")
	}
	if !errors.Is(err, store.ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("minority write failed with: %v", err)
	}
	if got := old.Store().Ledger().LastSeq(); got != before {
		t.Fatalf("minority applied events: %d -> %d", before, got)
	}
	var newLeader *controlplanetest.Server
	controlplanetest.WaitFor(t, 30*time.Second, "majority leader", func() bool {
		for _, n := range rest {
			if n.Store().IsLeader() {
				newLeader = n
				return true
			}
		}
		return false
	})
	if err := ingest(context.Background(), newLeader, "a2", 1, 200); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	c.Faults.Heal()
	c.WaitConverged()
	if got := old.Store().Ledger().LastSeq(); got != 250 {
		t.Fatalf("after heal the old leader has %d events, want 250", got)
	}
}

// TestLaggingNodeCatchesUpBySnapshot stops a node, writes enough for the leader to
// snapshot and truncate its log, and restarts the node: it must install the snapshot.
func TestLaggingNodeCatchesUpBySnapshot(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) {
		prev := cfg.TuneStore
		cfg.TuneStore = func(sc *store.Config) {
			prev(sc)
			sc.TrailingLogs = 10
			sc.SnapshotThreshold = 20
			sc.WALSegmentSize = 16 << 10 // small segments, so the log head really goes
		}
	})
	leader := c.Leader()
	var lag int
	for i, n := range c.Nodes {
		if n != leader {
			lag = i
			break
		}
	}
	c.Nodes[lag].Stop()
	// 18,000 events: past one key index flush (16,384 seqs), so the snapshot holds
	// flushed key index records and the node rebuilds the pending lists after it.
	for i := range 60 {
		if err := ingest(context.Background(), leader, "a1", 1+i*300, 300); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Store().Snapshot(); err != nil {
		t.Fatal(err)
	}
	snap, err := lastSnapshotIndex(leader)
	if err != nil {
		t.Fatal(err)
	}
	if snap <= 20 {
		t.Fatalf("leader snapshot index %d; with 10 trailing logs the test would not exercise snapshot install", snap)
	}
	n := c.Restart(lag)
	c.WaitConverged()
	if got := n.Store().Ledger().LastSeq(); got != 18000 {
		t.Fatalf("restarted node has %d events, want 18000", got)
	}
	// Listing by key on the restarted node finds every event of the key: i%13 == 5.
	evs, _, err := n.Store().Ledger().ListEvents(ledger.Filter{Keys: map[string]string{"sku": "S5"}}, 1, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 18000/13+1 {
		t.Fatalf("restarted node lists %d events of sku S5, want %d", len(evs), 18000/13+1)
	}
	for _, ev := range evs {
		if ev.GetEvent().GetKeys()["sku"] != "S5" {
			t.Fatalf("listed %v for sku S5", ev.GetEvent().GetKeys())
		}
	}
	// Ids from the snapshot's run and from the pending ids are duplicates on every node:
	// the agent sending the same events again under new seqs commits nothing anywhere.
	for _, from := range []int{1, 17500} {
		if err := resendAt(context.Background(), leader, "a1", from, 300, 100000); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitConverged()
	if got := n.Store().Ledger().LastSeq(); got != 18000 {
		t.Fatalf("after re-sent ids the caught-up node has %d events, want 18000", got)
	}
	if idx, _ := lastSnapshotIndex(n); idx == 0 {
		t.Fatalf("the lagging node caught up without installing a snapshot: %v", n.Store().Raft().Stats())
	}
}

// TestRecoverLostQuorumWithPeersJSON stops a whole 3-node cluster, writes a peers.json
// naming one surviving node, and restarts only that node: it must come back as a
// one-node cluster with every committed event.
func TestRecoverLostQuorumWithPeersJSON(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	if err := ingest(context.Background(), c.Leader(), "a1", 1, 300); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged()
	survivor := c.Nodes[1]
	id, addr := survivor.Config.NodeID, survivor.Store().RaftAddr()
	for _, n := range c.Nodes {
		n.Stop()
	}
	peers := fmt.Sprintf(`[{"id":%q,"address":%q,"non_voter":false}]`, id, addr)
	path := filepath.Join(survivor.Config.DataDir, "raft", store.PeersFile)
	if err := os.WriteFile(path, []byte(peers), 0o600); err != nil {
		t.Fatal(err)
	}
	n := c.Restart(1)
	controlplanetest.WaitFor(t, 30*time.Second, "the survivor to lead alone", n.Store().IsLeader)
	if got := n.Store().Ledger().LastSeq(); got != 300 {
		t.Fatalf("recovered node has %d events, want 300", got)
	}
	if err := ingest(context.Background(), n, "a1", 301, 10); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("peers.json was not renamed after use")
	}
}

// TestRemovePeers removes a follower, then the leader itself through the admin API: the
// leader hands over and the client follows the redirect to the new leader.
func TestRemovePeers(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	admin := c.Nodes[0].Admin
	leader := c.Leader()
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
		}
	}
	peers := func() []*adminv1.Peer {
		res, err := admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetPeers()
	}
	if _, err := admin.RemovePeer(context.Background(), connect.NewRequest(&adminv1.RemovePeerRequest{Id: follower.Config.NodeID})); err != nil {
		t.Fatalf("remove follower: %v", err)
	}
	if n := len(peers()); n != 2 {
		t.Fatalf("%d peers after removing a follower, want 2", n)
	}
	if _, err := admin.RemovePeer(context.Background(), connect.NewRequest(&adminv1.RemovePeerRequest{Id: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("removing an unknown peer: %v, want not found", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	controlplanetest.WaitFor(t, 30*time.Second, "leader removed", func() bool {
		_, err = admin.RemovePeer(ctx, connect.NewRequest(&adminv1.RemovePeerRequest{Id: leader.Config.NodeID}))
		return err == nil
	})
	rest := c.WaitLeader(leader)
	cf := rest.Store().Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	if n := len(cf.Configuration().Servers); n != 1 {
		t.Fatalf("%d servers left, want 1", n)
	}
}
