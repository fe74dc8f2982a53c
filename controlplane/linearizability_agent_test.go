package controlplane_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestLinearizabilityAgentUploads is TestLinearizability for the agent's path: real
// agents (outbox, uplink, redirects, resends) upload events to a 3-node cluster whose
// leader is repeatedly partitioned away, while readers read the last seq through the
// admin API. The same counter model checks the history:
//
//   - an upload is called when the event is durable in the agent's outbox and returns
//     when the agent sees it acknowledged (its committed seq reaches the event's outbox
//     seq). Its output is the seq the event holds in the ledger at the end, found by
//     (agent, outbox seq). An acknowledged upload that is not in the ledger is a loss
//     and fails the test at once; an event in the ledger twice fails it too.
//   - an upload not acknowledged within the wait has an unknown outcome: like a failed
//     write it returns after everything else and gets its ledger seq when it committed
//     (it is left out when not: after the final drain that cannot happen here).
//   - a read returns the last seq, legal iff it equals the state.
//
// So an ack that came before the commit (a leader acknowledging what a new leader
// then does not hold), or a read that misses an acknowledged upload, or an event
// committed at a seq that contradicts the order of acks and reads, has no legal order.
func TestLinearizabilityAgentUploads(t *testing.T) {
	const (
		agents    = 3
		readers   = 2
		runFor    = 8 * time.Second
		partition = 1200 * time.Millisecond
		healed    = 1500 * time.Millisecond // long enough for the agents to find the new leader and upload
		ackWait   = 4 * time.Second
	)
	c := controlplanetest.TestCluster(t, 3, nil)
	admins := adminClients(t, c)
	c.WaitConverged()
	base := c.Leader().Store().Ledger().LastSeq()
	model := ledgerCounterModel(base)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &linHistory{start: time.Now()}
	watch := &leaderWatch{terms: map[uint64]string{}}

	type upload struct {
		agent  string
		seq    uint64 // outbox seq
		op     porcupine.Operation
		acked  bool
		ledger uint64
	}
	var (
		umu     sync.Mutex
		uploads []*upload
	)
	var ags []*agent.Agent
	var runs sync.WaitGroup
	for i := range agents {
		name := fmt.Sprintf("lin-agent-%d", i)
		tok, err := c.Leader().Admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: name}))
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: c.Addrs(), EnrollToken: tok.Msg.GetToken(),
			LocalAddr: "-", Logger: controlplanetest.Logger(t), BatchMaxEvents: 1, Window: 1})
		if err != nil {
			t.Fatal(err)
		}
		ags = append(ags, a)
		runs.Go(func() { a.Run(ctx) })
	}
	defer func() { cancel(); runs.Wait() }()
	for _, a := range ags {
		controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool { return a.Status().GetUplinkState() == "connected" })
	}

	deadline := time.Now().Add(runFor)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			watch.poll(c)
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	})
	var faultLog []string
	bg.Go(func() {
		defer c.Faults.Heal()
		sleep := func(d time.Duration) bool {
			select {
			case <-stop:
				return false
			case <-time.After(d):
				return true
			}
		}
		for sleep(healed) {
			victim := c.Leader()
			if victim == nil {
				continue
			}
			var rest []*controlplanetest.Server
			for _, n := range c.Nodes {
				if n != victim {
					rest = append(rest, n)
				}
			}
			c.Faults.Partition(controlplanetest.RaftAddrs(victim), controlplanetest.RaftAddrs(rest...))
			faultLog = append(faultLog, fmt.Sprintf("%.2fs: partition leader %s", time.Duration(h.now()).Seconds(), victim.Store().NodeID()))
			ok := sleep(partition)
			c.Faults.Heal()
			if !ok {
				return
			}
		}
	})

	// Uploaders: one event at a time per agent, each waited for until acknowledged.
	var wg sync.WaitGroup
	for i, a := range ags {
		name := fmt.Sprintf("lin-agent-%d", i)
		wg.Go(func() {
			for n := 1; time.Now().Before(deadline); n++ {
				ev := level(fmt.Sprintf("A%d", i), n)
				ev.Keys = map[string]string{"sku": ev.GetInventoryLevel().GetSku(), "location": "WH1"}
				call := h.now()
				res, err := a.Publish(ctx, "", []*eventv1.Event{ev})
				if err != nil {
					t.Errorf("%s: publish: %v", name, err)
					return
				}
				u := &upload{agent: name, seq: res.GetLastSeq(),
					op: porcupine.Operation{ClientId: 100 + i, Input: linInput{Write: true, ID: res.GetIds()[0]}, Call: call}}
				waitUntil := time.Now().Add(ackWait)
				for time.Now().Before(waitUntil) && a.Status().GetCommittedSeq() < u.seq {
					pause(ctx, time.Millisecond) // polling the agent's ack, not waiting for a fixed time
				}
				u.op.Return = h.now()
				u.acked = a.Status().GetCommittedSeq() >= u.seq
				umu.Lock()
				uploads = append(uploads, u)
				umu.Unlock()
			}
		})
	}
	rcs := make([]*linClient, readers)
	for i := range rcs {
		cl := &linClient{id: i, c: c, admins: admins, h: h, rng: rand.New(rand.NewPCG(uint64(i), 7))}
		rcs[i] = cl
		wg.Go(func() {
			for time.Now().Before(deadline) {
				cl.read(ctx)
				pause(ctx, 5*time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()

	// Healed: every outbox drains, then a final read closes the history.
	// A drain that does not finish is reported, and the history still checked: it
	// says more about what went wrong.
	drainBy := time.Now().Add(30 * time.Second)
	for i, a := range ags {
		for {
			st := a.Status()
			if st.GetOutbox().GetPendingEvents() == 0 && st.GetCommittedSeq() == st.GetOutbox().GetLastSeq() {
				break
			}
			if time.Now().After(drainBy) {
				t.Errorf("agent %d's outbox did not drain in 30s after the faults: %v", i, st)
				break
			}
			pause(ctx, 10*time.Millisecond) // polling the outbox with a deadline
		}
	}
	final := &linClient{id: readers, c: c, admins: admins, h: h, rng: rand.New(rand.NewPCG(99, 7))}
	controlplanetest.WaitFor(t, 30*time.Second, "a final read", func() bool { return final.readFrom(ctx, 0) })
	c.WaitConverged()
	leader := c.Leader()

	// Each event's ledger seq by (agent, outbox seq); none twice.
	evs, _, err := leader.Store().Ledger().ListEvents(ledgerFilter(), base+1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]uint64{}
	for _, ce := range evs {
		k := fmt.Sprintf("%s/%d", ce.GetAgent(), ce.GetAgentSeq())
		if s, dup := at[k]; dup {
			t.Fatalf("%s committed twice, at seqs %d and %d", k, s, ce.GetSeq())
		}
		at[k] = ce.GetSeq()
	}
	end := h.now() + 1
	var acked, unknown int
	var ackTime time.Duration
	for _, u := range uploads {
		s, ok := at[fmt.Sprintf("%s/%d", u.agent, u.seq)]
		switch {
		case u.acked && !ok:
			t.Fatalf("%s's upload of outbox seq %d was acknowledged but is not in the ledger: lost", u.agent, u.seq)
		case !ok:
			continue // never committed (only when the drain above failed): no effect
		case !u.acked:
			u.op.Return = end
			unknown++
		default:
			acked++
			ackTime += time.Duration(u.op.Return - u.op.Call)
		}
		u.op.Output = linOutput{Seq: s}
		h.add(u.op)
	}
	if got, want := leader.Store().Ledger().LastSeq()-base, uint64(len(uploads)); got != want {
		t.Errorf("ledger grew by %d events; %d uploads were made", got, want)
	}
	var reads, readFails int
	for _, cl := range append(rcs, final) {
		reads, readFails = reads+cl.reads, readFails+cl.readFails
	}
	seqs, changes := watch.leaders()
	t.Logf("%d uploads (%d acknowledged in the run, mean %s to the ack; %d later), %d reads (%d failed, dropped)",
		len(uploads), acked, (ackTime / time.Duration(max(acked, 1))).Round(time.Millisecond), unknown, reads, readFails)
	t.Logf("faults: %s", strings.Join(faultLog, "; "))
	t.Logf("leaders by term: %s (%d leader changes)", strings.Join(seqs, " "), changes)
	if changes < 1 {
		t.Errorf("the leader never changed during the run (%v): the faults did not test failover", seqs)
	}
	if acked < 30 || reads < 30 {
		t.Errorf("only %d acknowledged uploads and %d reads: too few to test anything", acked, reads)
	}

	requireLinearizable(t, model, h.ops, "crossdock-linearizability-agent-")
}
