package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// shortRetention keeps every event one second (test durations are seconds; the dedup
// window has its minimum, a day).
const shortRetention = `apiVersion: crossdock.io/v1
kind: Retention
metadata:
  name: default
spec:
  default:
    keep: 1s
  types:
    - types: [inventory.level]
      keep: 1s
  compact: [inventory.level]
  dedupWindow: 24h
`

// retentionCluster starts 3 nodes that prune every 100ms and applies shortRetention.
func retentionCluster(t *testing.T) *controlplanetest.Cluster {
	c := controlplanetest.TestCluster(t, 3, func(_ int, cfg *controlplane.Config) { cfg.PruneInterval = 100 * time.Millisecond })
	applyDocs(t, c.Nodes[0], shortRetention)
	return c
}

// applyDocs applies documents through the node's routing API, as crossdock apply does.
func applyDocs(t *testing.T, s *controlplanetest.Server, yaml string) {
	t.Helper()
	cc, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	controlplanetest.WaitFor(t, 30*time.Second, "documents applied", func() bool {
		_, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(context.Background(),
			connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: yaml}))
		if err != nil {
			t.Logf("apply: %v", err)
		}
		return err == nil
	})
}

// ingestOnLeader commits n events of agent from seq from on whichever node leads,
// retrying while leadership moves.
func ingestOnLeader(t *testing.T, c *controlplanetest.Cluster, agentID string, from, n int) {
	t.Helper()
	ingestOn(t, c.Leader, agentID, from, n)
}

// ingestOn is ingestOnLeader with the leader given by leader.
func ingestOn(t *testing.T, leader func() *controlplanetest.Server, agentID string, from, n int) {
	t.Helper()
	controlplanetest.WaitFor(t, 30*time.Second, "a batch committed", func() bool {
		l := leader()
		if l == nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return ingest(ctx, l, agentID, from, n) == nil
	})
}

func lowWater(s *controlplanetest.Server) uint64 {
	low, _ := s.Store().Ledger().LowWater()
	return low
}

// TestRetentionOnCluster: with ingest running, the leader prunes by the Retention
// document; a leader change in the middle (and the old leader restarting) changes
// nothing: every node ends with the same ledger (Hash) and low-water mark, each event
// is held or pruned exactly once, and reads below the mark fail with OutOfRange naming
// the earliest seq and time held.
func TestRetentionOnCluster(t *testing.T) {
	c := retentionCluster(t)
	var (
		wg   sync.WaitGroup
		stop atomic.Bool
		sent atomic.Int64
		mu   sync.Mutex // held while nodes stop and restart: the ingest goroutine reads them
	)
	leader := func() *controlplanetest.Server {
		mu.Lock()
		defer mu.Unlock()
		return c.Leader()
	}
	const batch = 2000
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; !stop.Load(); i += batch {
			ingestOn(t, leader, "a1", i, batch)
			sent.Store(int64(i + batch - 1))
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()

	controlplanetest.WaitFor(t, 60*time.Second, "a first prune", func() bool {
		l := c.Leader()
		return l != nil && lowWater(l) > 0
	})
	// A leader change in the middle.
	old := c.WaitLeader(nil)
	oldLow := lowWater(old)
	idx := 0
	for i, n := range c.Nodes {
		if n == old {
			idx = i
		}
	}
	mu.Lock()
	old.Stop()
	mu.Unlock()
	next := c.WaitLeader(old)
	controlplanetest.WaitFor(t, 60*time.Second, "the new leader to prune further", func() bool {
		return lowWater(next) > oldLow && lowWater(next) > uint64(sent.Load())/2
	})
	mu.Lock()
	c.Restart(idx)
	mu.Unlock()
	before := lowWater(next)
	controlplanetest.WaitFor(t, 60*time.Second, "pruning after the restart", func() bool {
		l := c.Leader()
		return l != nil && lowWater(l) > before
	})
	stop.Store(true)
	wg.Wait()
	// Keep everything from now on, so the checks below see one state: no prune is
	// needed any more once one in steps finished.
	applyDocs(t, c.Nodes[0], strings.ReplaceAll(shortRetention, "keep: 1s", "keep: 720h"))
	var pruned uint64
	controlplanetest.WaitFor(t, 60*time.Second, "pruning to stop", func() bool {
		c.WaitConverged()
		lw, err := c.Nodes[0].Store().Ledger().Retention()
		if err != nil || lw.GetResume() != 0 || lw.GetEventsPruned() != pruned {
			pruned = lw.GetEventsPruned()
			return false
		}
		return true
	})

	// Same low-water mark everywhere; held + pruned = committed, no event twice.
	l0 := c.Nodes[0].Store().Ledger()
	low, lowAt := l0.LowWater()
	for _, n := range c.Nodes {
		if got, at := n.Store().Ledger().LowWater(); got != low || !at.Equal(lowAt) {
			t.Fatalf("node %s has low-water %d at %v, node-1 %d at %v", n.Config.NodeID, got, at, low, lowAt)
		}
	}
	lw, err := l0.Retention()
	if err != nil {
		t.Fatal(err)
	}
	held := map[uint64]bool{}
	for from := uint64(0); ; {
		evs, next, err := l0.ListEvents(ledger.Filter{}, from, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if held[ev.GetSeq()] || ev.GetSeq() < low {
				t.Fatalf("seq %d listed twice or below the low-water %d", ev.GetSeq(), low)
			}
			held[ev.GetSeq()] = true
		}
		if next == 0 {
			break
		}
		from = next
	}
	if last := l0.LastSeq(); uint64(len(held))+lw.GetEventsPruned() != last || last < uint64(sent.Load()) {
		t.Fatalf("%d held + %d pruned != %d committed (%d sent)", len(held), lw.GetEventsPruned(), last, sent.Load())
	}

	// Every node's archive (written ahead of the prunes in the background, and by the
	// prunes' Apply for what was not yet) holds each pruned event exactly once, under
	// its original id: the manifests count no event twice and reading gives every seq
	// the ledger no longer holds (and may give some it still holds: archived ahead of a
	// prune that the change to 720h above cancelled).
	for _, n := range c.Nodes {
		ctx := context.Background()
		lst, err := n.Archive().List(ctx, archive.Filter{})
		if err != nil || len(lst.Damaged) != 0 {
			t.Fatalf("node %s: list its archive: %v %v", n.Config.NodeID, err, lst.Damaged)
		}
		var stored uint64
		for _, f := range lst.Files {
			stored += f.Events
		}
		it, err := n.Archive().Events(ctx, archive.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var read, gone uint64
		for {
			ev, err := it.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("node %s: read its archive: %v", n.Config.NodeID, err)
			}
			read++
			if !held[ev.GetSeq()] {
				gone++
			}
			if want := fmt.Sprintf("a1-%d", ev.GetAgentSeq()); ev.GetEvent().GetId() != want {
				t.Fatalf("node %s archived seq %d with id %q, want %q", n.Config.NodeID, ev.GetSeq(), ev.GetEvent().GetId(), want)
			}
		}
		if stored != read || gone != lw.GetEventsPruned() {
			t.Fatalf("node %s: archive lists %d events, reads %d (%d of them pruned); %d were pruned", n.Config.NodeID, stored, read, gone, lw.GetEventsPruned())
		}
	}

	// Reads below the mark: OutOfRange naming the earliest seq and time held.
	admin := controlplanetest.AdminClient(t, c.Nodes[0].AdminConfigPath())
	controlplanetest.WaitFor(t, 30*time.Second, "an answer (not a leader election)", func() bool {
		_, err = admin.ListEvents(context.Background(), connect.NewRequest(&adminv1.ListEventsRequest{FromSeq: 1, Limit: 10}))
		return connect.CodeOf(err) != connect.CodeUnavailable
	})
	first, _, ferr := l0.ListEvents(ledger.Filter{}, 0, 1)
	if ferr != nil || len(first) != 1 {
		t.Fatalf("earliest held: %v %v", first, ferr)
	}
	want := fmt.Sprintf("the earliest still held is seq %d, committed at %s", first[0].GetSeq(), first[0].GetCommittedAt().AsTime().UTC().Format(time.RFC3339Nano))
	if connect.CodeOf(err) != connect.CodeOutOfRange || !strings.Contains(err.Error(), want) {
		t.Fatalf("ListEvents from seq 1: %v; want out_of_range containing %q", err, want)
	}
	var st *connect.Response[adminv1.GetClusterStatusResponse]
	controlplanetest.WaitFor(t, 30*time.Second, "cluster status", func() bool {
		st, err = admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		return err == nil
	})
	if r := st.Msg.GetRetention(); r.GetLowWaterSeq() != low || r.GetEventsHeld() != uint64(len(held)) || r.GetLastPrune() == nil {
		t.Fatalf("status retention %v, want low-water %d and %d held", r, low, len(held))
	}
}

// TestAgentOfflineLongerThanRetention: an agent's events are pruned (retention 1s)
// while it is offline; when it comes back within the dedup window and sends them again
// (its outbox under the same seqs, after an ack it never got, or its connector re-read
// under new seqs), nothing is committed twice, on every node.
func TestAgentOfflineLongerThanRetention(t *testing.T) {
	c := retentionCluster(t)
	ingestOnLeader(t, c, "a7", 1, 100)
	l := c.WaitLeader(nil).Store().Ledger()
	if _, ok, err := l.AgentEventByID("a7", "a7-5"); err != nil || !ok {
		t.Fatalf("a7-5 not committed: %v", err)
	}
	// Other agents' traffic goes on while a7 is offline, past its events' retention.
	for i := 1; i <= 40000; i += 5000 {
		ingestOnLeader(t, c, "busy", i, 5000)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "a7's events to be pruned", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		_, _, err := l.Store().Ledger().AgentEventByID("a7", "a7-99")
		return errors.Is(err, ledger.ErrPruned)
	})
	leader := c.WaitLeader(nil)
	last := leader.Store().Ledger().LastSeq()
	for _, tc := range []struct {
		name      string
		seqOffset int
	}{{"outbox re-send (same seqs)", 0}, {"connector re-read (new seqs)", 1000}} {
		b := &storev1.IngestBatch{AgentId: "a7"}
		for i := 1; i <= 100; i++ {
			ev := level(fmt.Sprintf("S%d", i%13), i)
			ev.Type, ev.Id = "inventory.level", fmt.Sprintf("a7-%d", i)
			ev.Keys = map[string]string{"sku": ev.GetInventoryLevel().GetSku(), "location": "WH1"}
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(i + tc.seqOffset), Event: ev})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := leader.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := res.(*storev1.IngestResult)
		if r.GetCommitted() != 0 || r.GetDuplicates() != 100 || len(r.GetConflicts()) != 0 {
			t.Fatalf("%s: %d committed, %d duplicates, %d conflicts; want 0, 100, 0", tc.name, r.GetCommitted(), r.GetDuplicates(), len(r.GetConflicts()))
		}
	}
	if got := leader.Store().Ledger().LastSeq(); got != last {
		t.Fatalf("the re-sent events moved the ledger from seq %d to %d", last, got)
	}
	c.WaitConverged()
}

// TestRetentionHeldByDestinationCursor: a webhook destination that has delivered
// nothing holds retention at its cursor (nothing is pruned however old); once it is
// deleted, it holds nothing.
func TestRetentionHeldByDestinationCursor(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(cfg *controlplane.Config) {
		cfg.PruneInterval = time.Hour // Once is called by the test
		cfg.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	rc := routingv1connect.NewRoutingServiceClient(hc, base)
	docs := shortRetention + `---
apiVersion: crossdock.io/v1
kind: Destination
metadata:
  name: down
spec:
  type: webhook
  url: https://127.0.0.1:1/hook
  secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
---
apiVersion: crossdock.io/v1
kind: Route
metadata:
  name: all-to-down
spec:
  destination: down
`
	if _, err := rc.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 40000; i += 5000 {
		if err := ingest(ctx, srv, "a1", i, 5000); err != nil {
			t.Fatal(err)
		}
	}
	l := srv.Store().Ledger()
	// Every event is older than its keep (1s) once a later one is.
	last, _, _ := l.ListEvents(ledger.Filter{}, l.LastSeq(), 1)
	controlplanetest.WaitFor(t, 10*time.Second, "every event to be older than 1s", func() bool {
		return time.Since(last[0].GetCommittedAt().AsTime()) > 1100*time.Millisecond
	})
	if n, err := srv.Pruner().Once(ctx); err != nil || n != 0 {
		t.Fatalf("with a destination at cursor 1, a prune removed %d events (%v)", n, err)
	}
	if low, _ := l.LowWater(); low != 0 {
		t.Fatalf("low-water %d past the destination's cursor", low)
	}
	for _, ref := range []struct{ kind, name string }{{"Route", "all-to-down"}, {"Destination", "down"}} {
		if _, err := rc.DeleteDocument(ctx, connect.NewRequest(&routingv1.DeleteDocumentRequest{Kind: ref.kind, Name: ref.name})); err != nil {
			t.Fatal(err)
		}
	}
	n, err := srv.Pruner().Once(ctx)
	if err != nil || n < 16000 {
		t.Fatalf("after the destination was deleted a prune removed %d events (%v); want the flushed ones", n, err)
	}
}

// TestListedPrunesWaitForEveryNode: a cluster upgraded one node at a time. While one
// node reports no stored-state features (it plays a node of a build before listed
// prunes: fault injection, ReportNoFeatures, with following off so it lists nothing
// when it leads), the leader names it in its cluster status and its prunes list
// nothing: they compact every key they remove. Once that node runs the build
// (restarted without the flag) and has reported, prunes list again, and every node
// ends with the same ledger.
func TestListedPrunesWaitForEveryNode(t *testing.T) {
	older := func(cfg *controlplane.Config, on bool) {
		cfg.ReportNoFeatures = on
		cfg.PruneCompactKeys = 0
		if on {
			cfg.PruneCompactKeys = -1
		}
	}
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) {
		cfg.PruneInterval = 100 * time.Millisecond
		withMetrics(cfg)
		older(cfg, i == 2)
	})
	applyDocs(t, c.Nodes[0], shortRetention)

	// state ingests a batch (so that there is always something to prune), then reads
	// from the leader its crossdock_retention_compact_listed_events (-1: the last
	// prune compacted every key it removed), its low-water mark, and from its cluster
	// status whether both followers have reported their disk (and so their features:
	// a leader names a node that has not reported to it yet, in its term, as on an
	// older build) and which nodes run an older build.
	next := 1
	type leaderState struct {
		leader   string
		listed   float64
		low      uint64
		reported bool
		older    []string
	}
	state := func() (leaderState, bool) {
		ingestOnLeader(t, c, "a1", next, 2000)
		next += 2000
		l := c.Leader()
		if l == nil {
			return leaderState{}, false
		}
		st, err := l.Admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		if err != nil || st.Msg.GetLeaderId() != l.Config.NodeID {
			return leaderState{}, false
		}
		v, ok := value(scrape(t, l.MetricsAddr()), "crossdock_retention_compact_listed_events", nil)
		s := leaderState{leader: l.Config.NodeID, listed: v, low: lowWater(l), older: st.Msg.GetOlderBuilds()}
		followers := 0
		for _, p := range st.Msg.GetPeers() {
			if p.GetId() != l.Config.NodeID && p.GetDiskFreeBytes() > 0 {
				followers++
			}
		}
		s.reported = followers == len(c.Nodes)-1
		return s, ok
	}

	// Once both followers have reported to the leader, it names node-3 alone, and the
	// mark moves past four more prunes, none of which lists. Node-3 leading would list
	// nothing itself, so it hands leadership over when an election (a loaded machine)
	// made it leader.
	var (
		marks       []uint64
		marksLeader string
		last        leaderState
	)
	defer func() {
		if t.Failed() {
			t.Logf("last leader state: %+v; marks %v by %s", last, marks, marksLeader)
		}
	}()
	controlplanetest.WaitFor(t, 3*time.Minute, "four prunes after every node, node-3 on the older build, reported", func() bool {
		s, ok := state()
		last = s
		if ok && s.leader == "node-3" {
			_ = c.Nodes[2].Store().Raft().LeadershipTransfer().Error()
			return false
		}
		if !ok || !s.reported {
			return false
		}
		if s.leader != marksLeader { // count the prunes of one leader
			marks, marksLeader = nil, s.leader
		}
		if !slices.Contains(s.older, "node-3") {
			t.Fatalf("the leader's status names %v as on an older build, without node-3", s.older)
		}
		if !slices.Equal(s.older, []string{"node-3"}) {
			return false // a node of this build that has not reported in the leader's term yet
		}
		if len(marks) > 0 && s.listed != -1 {
			t.Fatalf("a prune listed %v events while node-3 cannot apply a list", s.listed)
		}
		if len(marks) == 0 || s.low > marks[len(marks)-1] {
			marks = append(marks, s.low)
		}
		return len(marks) >= 5
	})

	// Node-3 is upgraded: once it has reported, no node is named and prunes list again.
	c.Nodes[2].Stop()
	older(&c.Nodes[2].Config, false)
	c.Restart(2)
	controlplanetest.WaitFor(t, 3*time.Minute, "a listed prune once every node runs the build", func() bool {
		s, ok := state()
		return ok && len(s.older) == 0 && s.listed >= 0
	})
	c.WaitConverged()
}
