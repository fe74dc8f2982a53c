package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/sample"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// The tests in this file run a three-node control plane as processes of the built
// binary, with agents in front of it, and break the cluster while events stream.

// cpNode is one control plane node: its fixed addresses and data dir, and the process
// currently running it (a node keeps its ports and data dir across restarts).
type cpNode struct {
	id, addr, raftAddr, dataDir string
	proc                        *proc
	starts                      int
	// admin is an admin client dialing this node. Unary calls that need the leader are
	// redirected to it; GetClusterStatus and TailEvents are answered by this node itself.
	admin adminv1connect.AdminServiceClient
}

func (n *cpNode) running() bool {
	if n.proc == nil {
		return false
	}
	select {
	case <-n.proc.done:
		return false
	default:
		return true
	}
}

// serverArgs are the node's flags for a restart: a node with a data dir needs no --join.
func (n *cpNode) serverArgs() []string {
	return []string{"server", "--data-dir", n.dataDir, "--node-id", n.id, "--listen", n.addr,
		"--raft-listen", n.raftAddr, "--write-cli-config=false", "--metrics-listen", ""}
}

type cpCluster struct {
	t      *testing.T
	nodes  []*cpNode
	config string // node 1's admin.yaml
	cfg    *cliconfig.Config
}

func (c *cpCluster) start(n *cpNode, extra ...string) {
	c.t.Helper()
	n.starts++
	n.proc = start(c.t, fmt.Sprintf("%s-run%d", n.id, n.starts), append(n.serverArgs(), extra...)...)
}

// startCluster bootstraps node n1, joins n2 and n3 with server tokens, and waits until
// `crossdock cluster peers` shows three voters.
func startCluster(t *testing.T) *cpCluster {
	t.Helper()
	c := &cpCluster{t: t}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, &cpNode{
			id:       fmt.Sprintf("n%d", i),
			addr:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			dataDir:  t.TempDir(),
		})
	}
	n1 := c.nodes[0]
	c.config = filepath.Join(n1.dataDir, "admin.yaml")
	c.start(n1)
	testutil.WaitForDetail(t, 60*time.Second, 50*time.Millisecond, "n1 to bootstrap and write admin.yaml", func() (bool, string) {
		_, err := os.Stat(c.config)
		return err == nil, fmt.Sprint(err)
	})
	cfg, err := cliconfig.Load(c.config)
	if err != nil {
		t.Fatal(err)
	}
	c.cfg = cfg
	for _, n := range c.nodes {
		nc := *cfg
		nc.Addr = n.addr
		cl, closeFn, err := nc.AdminClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeFn)
		n.admin = cl
	}
	testutil.WaitForDetail(t, 30*time.Second, 50*time.Millisecond, "n1's admin API", func() (bool, string) {
		_, err := c.status(n1)
		return err == nil, fmt.Sprint(err)
	})
	for _, n := range c.nodes[1:] {
		tok, err := run(t, "token", "create", "--config", c.config, "--kind", "server")
		if err != nil {
			t.Fatal(err)
		}
		c.start(n, "--join", n1.addr, "--join-token", strings.TrimSpace(tok))
	}
	testutil.WaitForDetail(t, 90*time.Second, 200*time.Millisecond, "cluster peers to show 3 voters", func() (bool, string) {
		out, err := run(t, "cluster", "peers", "--config", c.config, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		var st adminv1.GetClusterStatusResponse
		if err := protojson.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("cluster peers -o json is not a GetClusterStatusResponse: %v\n%s", err, out)
		}
		roles := map[string]int{}
		for _, p := range st.GetPeers() {
			roles[p.GetRole()]++
		}
		return len(st.GetPeers()) == 3 && roles["leader"] == 1 && roles["follower"] == 2, out
	})
	return c
}

func (c *cpCluster) status(n *cpNode) (*adminv1.GetClusterStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := n.admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// leader returns the running node that running nodes name as leader, or nil.
func (c *cpCluster) leader() *cpNode {
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		st, err := c.status(n)
		if err != nil {
			continue
		}
		for _, p := range st.GetPeers() {
			if p.GetRole() != "leader" {
				continue
			}
			for _, l := range c.nodes {
				if l.id == p.GetId() && l.running() {
					return l
				}
			}
		}
	}
	return nil
}

// anyRunning returns a running node to send leader-bound admin calls through.
func (c *cpCluster) anyRunning() *cpNode {
	for _, n := range c.nodes {
		if n.running() {
			return n
		}
	}
	c.t.Fatal("no control plane node is running")
	return nil
}

// lastSeq is the ledger's last seq as the leader sees it (a linearizable read).
func (c *cpCluster) lastSeq() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.anyRunning().admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{FromSeq: 1 << 62, Limit: 1}))
	if err != nil {
		return 0, err
	}
	return res.Msg.GetLastSeq(), nil
}

// allEvents reads the whole ledger through the leader.
func (c *cpCluster) allEvents() []*eventv1.CommittedEvent {
	c.t.Helper()
	var out []*eventv1.CommittedEvent
	from := uint64(1)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := c.anyRunning().admin.ListEvents(ctx, connect.NewRequest(&adminv1.ListEventsRequest{FromSeq: from, Limit: 10000}))
		cancel()
		if err != nil {
			c.t.Fatalf("list events from %d: %v", from, err)
		}
		evs := res.Msg.GetEvents()
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		from = evs[len(evs)-1].GetSeq() + 1
	}
}

// waitLeader waits until every running node names the same running leader, other
// than not (may be empty), and returns it.
func (c *cpCluster) waitLeader(not string) *cpNode {
	c.t.Helper()
	var l *cpNode
	testutil.WaitForDetail(c.t, 60*time.Second, 100*time.Millisecond, "a leader all running nodes agree on", func() (bool, string) {
		var ids []string
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			st, err := c.status(n)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.id, err)
			}
			ids = append(ids, st.GetLeaderId())
		}
		for _, id := range ids {
			if id == "" || id == not || id != ids[0] {
				return false, fmt.Sprintf("leaders seen: %q", ids)
			}
		}
		for _, n := range c.nodes {
			if n.id == ids[0] && n.running() {
				l = n
				return true, ""
			}
		}
		return false, fmt.Sprintf("leader %s is not running", ids[0])
	})
	return l
}

// terminate stops a node with SIGTERM and waits for a clean exit.
func (c *cpCluster) terminate(n *cpNode) {
	c.t.Helper()
	if err := n.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM %s: %v", n.id, err)
	}
	waitExit(c.t, n.proc, 30*time.Second, n.id+" to exit after SIGTERM")
	if n.proc.err != nil {
		c.t.Errorf("%s exited after SIGTERM with %v; want a clean exit", n.id, n.proc.err)
	}
}

// waitConverged waits until every node, asked directly, reports the same leader, three
// voters, last seq total and the same raft applied index, then reads each node's own
// ledger and compares it with want (the leader's, already checked).
//
// Unary admin reads (ListEvents) are redirected to the leader, so they cannot show what
// a follower holds. GetClusterStatus is answered from the node's local state: once the
// writes stopped, equal applied indexes mean every node applied the same raft log
// prefix, and a local last_seq of total means its ledger holds every event. TailEvents
// streams are served by the node itself from its own ledger, which checks the content:
// the same events at the same seqs on every node.
func (c *cpCluster) waitConverged(want []*eventv1.CommittedEvent) {
	c.t.Helper()
	total := uint64(len(want))
	testutil.WaitForDetail(c.t, 90*time.Second, 100*time.Millisecond, "all nodes to converge", func() (bool, string) {
		var leader string
		var applied uint64
		var desc []string
		ok := true
		for i, n := range c.nodes {
			st, err := c.status(n)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.id, err)
			}
			var self uint64
			voters := 0
			for _, p := range st.GetPeers() {
				if p.GetRole() == "leader" || p.GetRole() == "follower" {
					voters++
				}
				if p.GetId() == n.id {
					self = p.GetAppliedIndex()
				}
			}
			desc = append(desc, fmt.Sprintf("%s: leader=%s voters=%d last_seq=%d applied=%d", n.id, st.GetLeaderId(), voters, st.GetLastSeq(), self))
			if i == 0 {
				leader, applied = st.GetLeaderId(), self
			}
			ok = ok && st.GetLeaderId() != "" && st.GetLeaderId() == leader && voters == 3 &&
				st.GetLastSeq() == total && self == applied
		}
		return ok, strings.Join(desc, "; ")
	})
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sameLedger(n, want)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
}

// sameLedger reads n's own ledger and compares it with want.
func sameLedger(n *cpNode, want []*eventv1.CommittedEvent) error {
	got, err := tailLocal(n.admin, len(want), 60*time.Second)
	if err != nil {
		return fmt.Errorf("%s: tail its ledger: %w (got %d of %d events)", n.id, err, len(got), len(want))
	}
	for i, ce := range got {
		if ce.GetSeq() != want[i].GetSeq() || ce.GetEvent().GetId() != want[i].GetEvent().GetId() || ce.GetAgentSeq() != want[i].GetAgentSeq() {
			return fmt.Errorf("%s holds seq %d = %s (agent seq %d); the leader holds seq %d = %s (agent seq %d)", n.id,
				ce.GetSeq(), ce.GetEvent().GetId(), ce.GetAgentSeq(), want[i].GetSeq(), want[i].GetEvent().GetId(), want[i].GetAgentSeq())
		}
	}
	return nil
}

// tailLocal reads the first n events of the ledger of the node client dials.
func tailLocal(client adminv1connect.AdminServiceClient, n int, timeout time.Duration) ([]*eventv1.CommittedEvent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := client.TailEvents(ctx, connect.NewRequest(&adminv1.TailEventsRequest{FromSeq: 1}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	out := make([]*eventv1.CommittedEvent, 0, n)
	for len(out) < n && stream.Receive() {
		out = append(out, stream.Msg().GetEvent())
	}
	if len(out) < n {
		return out, errors.Join(errors.New("stream ended early"), stream.Err())
	}
	return out, nil
}

func waitExit(t *testing.T, p *proc, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// logLines logs the lines of p's log that contain substr.
func logLines(t *testing.T, p *proc, substr string) {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Log(err)
		return
	}
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, substr) {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// testAgent is an enrolled agent process.
type testAgent struct {
	name, local string
	proc        *proc
}

func (c *cpCluster) startAgent(name string) *testAgent {
	c.t.Helper()
	tok, err := run(c.t, "token", "create", "--config", c.config, "--name", name)
	if err != nil {
		c.t.Fatal(err)
	}
	a := &testAgent{name: name, local: fmt.Sprintf("127.0.0.1:%d", freePort(c.t))}
	args := []string{"agent", "--data-dir", c.t.TempDir(), "--local-addr", a.local, "--enroll-token", strings.TrimSpace(tok)}
	for _, n := range c.nodes {
		args = append(args, "--server", n.addr)
	}
	a.proc = start(c.t, "agent-"+name, args...)
	testutil.WaitForDetail(c.t, 30*time.Second, 50*time.Millisecond, name+" connected", func() (bool, string) {
		st, err := agentStatus(a.local)
		if err != nil {
			return false, err.Error()
		}
		return st.GetUplinkState() == "connected", st.String()
	})
	return a
}

// waitDrained waits until the agent's outbox has nothing pending.
func (a *testAgent) waitDrained(t *testing.T, timeout time.Duration) {
	t.Helper()
	testutil.WaitForDetail(t, timeout, 100*time.Millisecond, a.name+"'s outbox to drain", func() (bool, string) {
		st, err := agentStatus(a.local)
		if err != nil {
			return false, err.Error()
		}
		return st.GetOutbox().GetPendingEvents() == 0, st.String()
	})
}

// writeSampleEvents writes n sample inventory changes of one generator as JSONL, split
// into chunks files of consecutive source positions sample:1..sample:n.
func writeSampleEvents(t *testing.T, seed uint64, warehouses []string, n, chunks int) []string {
	t.Helper()
	gen := sample.NewInventory(seed, warehouses, 500, time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	var paths []string
	for c := range chunks {
		path := filepath.Join(dir, fmt.Sprintf("events-%d.jsonl", c))
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(f)
		for range n / chunks {
			b, err := protojson.Marshal(gen.Next())
			if err != nil {
				t.Fatal(err)
			}
			w.Write(b)
			w.WriteByte('\n')
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	return paths
}

// checkLedger checks evs is the whole ledger and holds, for each agent, the events at
// source positions sample:1..sample:count exactly once, with gap-free seqs, each
// agent's outbox order kept and each key's source order kept.
func checkLedger(t *testing.T, evs []*eventv1.CommittedEvent, agents map[string]int) {
	t.Helper()
	total := 0
	want := map[string]string{} // id -> agent
	for name, count := range agents {
		total += count
		for i := 1; i <= count; i++ {
			want[canonical.ID(name, "publish", "sample:"+strconv.Itoa(i))] = name
		}
	}
	if len(evs) != total {
		t.Fatalf("ledger holds %d events, want %d", len(evs), total)
	}
	seen := map[string]bool{}
	lastPos := map[string]int{}
	lastAgentSeq := map[string]uint64{}
	for i, ce := range evs {
		if ce.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d: ledger seqs must be gap-free", i, ce.GetSeq())
		}
		id := ce.GetEvent().GetId()
		agent, ok := want[id]
		if !ok {
			t.Fatalf("unexpected event id %s at seq %d (agent %s, position %s)", id, ce.GetSeq(), ce.GetAgent(), ce.GetEvent().GetSource().GetPosition())
		}
		if seen[id] {
			t.Fatalf("event %s committed twice (second time at seq %d)", id, ce.GetSeq())
		}
		seen[id] = true
		if ce.GetAgent() != agent {
			t.Fatalf("seq %d: committed for agent %q, want %q", ce.GetSeq(), ce.GetAgent(), agent)
		}
		if ce.GetAgentSeq() <= lastAgentSeq[agent] {
			t.Fatalf("seq %d: agent %s outbox seq %d committed after %d (outbox order broken)", ce.GetSeq(), agent, ce.GetAgentSeq(), lastAgentSeq[agent])
		}
		lastAgentSeq[agent] = ce.GetAgentSeq()
		pos, err := strconv.Atoi(strings.TrimPrefix(ce.GetEvent().GetSource().GetPosition(), "sample:"))
		if err != nil {
			t.Fatalf("seq %d: source position %q", ce.GetSeq(), ce.GetEvent().GetSource().GetPosition())
		}
		key := agent + "/" + fmtKeys(ce.GetEvent().GetKeys())
		if pos <= lastPos[key] {
			t.Fatalf("key %s: position %d committed after %d (per-key order broken)", key, pos, lastPos[key])
		}
		lastPos[key] = pos
	}
}

// TestClusterKillLeader streams 50,000 events from two agents into a three-node
// cluster, SIGKILLs the leader part-way, and checks the survivors commit every event
// exactly once without operator action; then the killed node comes back from its data
// dir and every node ends up with the same ledger. The test fails when everything was
// committed before the kill (it came too late).
func TestClusterKillLeader(t *testing.T) {
	const perAgent = 25000
	began := time.Now()
	c := startCluster(t)
	t.Logf("cluster of 3 voters up after %s", time.Since(began).Round(time.Millisecond))

	agents := []*testAgent{c.startAgent("erp-a"), c.startAgent("erp-b")}
	files := [][]string{
		writeSampleEvents(t, 1, []string{"WH-A1", "WH-A2"}, perAgent, 1),
		writeSampleEvents(t, 2, []string{"WH-B1", "WH-B2", "WH-B3"}, perAgent, 1),
	}
	var pubs []*proc
	for i, a := range agents {
		pubs = append(pubs, start(t, "publish-"+a.name, "publish", "--file", files[i][0], "--agent", a.local, "--batch", "500"))
	}
	testutil.WaitForDetail(t, 60*time.Second, 20*time.Millisecond, "some thousands of events committed", func() (bool, string) {
		n, err := c.lastSeq()
		return n >= 3000, fmt.Sprintf("last seq %d, err %v", n, err)
	})
	old := c.waitLeader("")
	old.proc.kill()
	killedAt := time.Now()
	t.Logf("SIGKILLed leader %s after %s", old.id, time.Since(began).Round(time.Millisecond))

	nl := c.waitLeader(old.id)
	t.Logf("new leader %s after %s", nl.id, time.Since(killedAt).Round(time.Millisecond))
	// The kill must cut into the stream: the survivors have events left to commit.
	var atFailover uint64
	testutil.WaitForDetail(t, 30*time.Second, 50*time.Millisecond, "the new leader's last seq", func() (bool, string) {
		n, err := c.lastSeq()
		atFailover = n
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("ledger at %d events when the new leader answered", atFailover)
	if atFailover >= 2*perAgent {
		t.Fatalf("all %d events were committed before the leader was killed: the kill came too late to test anything", atFailover)
	}

	for i, p := range pubs {
		waitExit(t, p, 60*time.Second, "publish for "+agents[i].name)
		if p.err != nil {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("publish for %s failed: %v\n%s", agents[i].name, p.err, tail(b, 2048))
		}
	}
	// Over HTTP/3 an agent whose leader died notices only when its QUIC connection
	// reaches the idle timeout (30s, see agent/uplink): the kernel tells UDP senders
	// nothing. Over HTTP/2 the dead process's TCP reset ends the stream at once.
	for _, a := range agents {
		a.waitDrained(t, 120*time.Second)
	}
	t.Logf("both outboxes drained %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	for _, a := range agents {
		logLines(t, a.proc, "uplink")
	}
	if n, err := c.lastSeq(); err != nil || n != 2*perAgent {
		t.Fatalf("ledger last seq = %d (err %v), want %d", n, err, 2*perAgent)
	}
	evs := c.allEvents()
	checkLedger(t, evs, map[string]int{"erp-a": perAgent, "erp-b": perAgent})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := nl.admin.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ag := range res.Msg.GetAgents() {
		if ag.GetEventsCommitted() != perAgent || ag.GetCommittedSeq() != perAgent {
			t.Fatalf("agent record %v: want %d events committed up to seq %d", ag, perAgent, perAgent)
		}
	}
	if n := len(res.Msg.GetAgents()); n != 2 {
		t.Fatalf("%d agents listed, want 2", n)
	}

	// The killed node comes back from its data dir with the same ports and catches up.
	restarted := time.Now()
	c.start(old)
	c.waitConverged(evs)
	c.waitLeader("")
	t.Logf("%s back and every node's ledger checked %s after its restart", old.id, time.Since(restarted).Round(time.Millisecond))
	t.Logf("killed node %s rejoined and all nodes converged; total %s", old.id, time.Since(began).Round(time.Millisecond))
}

// TestClusterRollingRestart restarts each node of a three-node cluster in turn (SIGTERM,
// start again from its data dir) while one agent publishes 20,000 events, and checks
// every event is committed exactly once.
//
// The publisher runs in the background, a quarter of the events at a time: the first
// quarter up front, the next as each node goes down. Before a node is stopped the agent
// has events pending from the quarter just started, so every restart cuts into a live
// stream (the leader's, when the node leads). Before the next node is stopped, the
// restarted node must be back as a caught-up voter and the agent must have committed
// something after the restart, as an operator's health gate would demand.
func TestClusterRollingRestart(t *testing.T) {
	const total, phases = 20000, 4
	const chunk = total / phases
	began := time.Now()
	c := startCluster(t)
	t.Logf("cluster of 3 voters up after %s", time.Since(began).Round(time.Millisecond))
	a := c.startAgent("erp-roll")
	files := writeSampleEvents(t, 7, sample.DefaultWarehouses, total, phases)

	gates := make([]chan struct{}, phases)
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	close(gates[0])
	var wg sync.WaitGroup
	var pubErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, f := range files {
			<-gates[i]
			if _, err := run(t, "publish", "--file", f, "--agent", a.local, "--batch", "250"); err != nil {
				pubErr = err
				return
			}
		}
	}()
	defer func() {
		for _, g := range gates {
			select {
			case <-g:
			default:
				close(g)
			}
		}
		wg.Wait()
	}()

	status := func() *agentv1.AgentStatus {
		st, err := agentStatus(a.local)
		if err != nil {
			t.Fatalf("agent status: %v", err)
		}
		return st
	}
	for i, n := range c.nodes {
		// Start the next quarter and wait until the agent holds some of it.
		close(gates[i+1])
		testutil.WaitForDetail(t, 60*time.Second, 10*time.Millisecond, fmt.Sprintf("publish of quarter %d to begin", i+2), func() (bool, string) {
			st := status()
			return st.GetOutbox().GetLastSeq() > uint64((i+1)*chunk), st.String()
		})
		// Everything committed before this node goes down must be on it when it is back.
		var before uint64
		for _, m := range c.nodes {
			if st, err := c.status(m); err == nil {
				before = max(before, st.GetLastSeq())
			}
		}
		wasLeader := c.leader() == n
		// Cut into a live stream: stop the node while the agent has events pending. If
		// the quarter drained first, the restart would test nothing: fail.
		var atStop *agentv1.AgentStatus
		testutil.WaitForDetail(t, 20*time.Second, time.Millisecond, fmt.Sprintf("events pending in the agent before stopping %s (else the restart comes too late)", n.id), func() (bool, string) {
			atStop = status()
			return atStop.GetOutbox().GetPendingEvents() > 0, atStop.String()
		})
		stopped := time.Now()
		c.terminate(n)
		c.start(n)
		testutil.WaitForDetail(t, 60*time.Second, 100*time.Millisecond, n.id+" back as a caught-up voter", func() (bool, string) {
			st, err := c.status(n)
			if err != nil {
				return false, err.Error()
			}
			voters := 0
			for _, p := range st.GetPeers() {
				if p.GetRole() == "leader" || p.GetRole() == "follower" {
					voters++
				}
			}
			return st.GetLeaderId() != "" && voters == 3 && st.GetLastSeq() >= before,
				fmt.Sprintf("leader %q, %d voters, last seq %d (want >= %d)", st.GetLeaderId(), voters, st.GetLastSeq(), before)
		})
		l := c.waitLeader("")
		back := time.Since(stopped)
		// Ingest resumed: the agent commits more than it had when the node was back (or
		// has committed everything published so far).
		atBack := status()
		testutil.WaitForDetail(t, 90*time.Second, 50*time.Millisecond, "the agent to commit again after restarting "+n.id, func() (bool, string) {
			st := status()
			return st.GetCommittedSeq() > atBack.GetCommittedSeq() || st.GetCommittedSeq() == uint64((i+2)*chunk), st.String()
		})
		t.Logf("restarted %s (was leader: %v) with the agent at committed seq %d, outbox last seq %d (%d pending): back in %s, leader %s, ingesting again after %s",
			n.id, wasLeader, atStop.GetCommittedSeq(), atStop.GetOutbox().GetLastSeq(), atStop.GetOutbox().GetPendingEvents(), back.Round(time.Millisecond), l.id, time.Since(stopped).Round(time.Millisecond))
	}

	wg.Wait()
	logLines(t, a.proc, "uplink")
	if pubErr != nil {
		t.Fatalf("background publish: %v", pubErr)
	}
	a.waitDrained(t, 120*time.Second)
	if n, err := c.lastSeq(); err != nil || n != total {
		t.Fatalf("ledger last seq = %d (err %v), want %d", n, err, total)
	}
	evs := c.allEvents()
	checkLedger(t, evs, map[string]int{"erp-roll": total})
	c.waitConverged(evs)
	t.Logf("total %s", time.Since(began).Round(time.Millisecond))
}
