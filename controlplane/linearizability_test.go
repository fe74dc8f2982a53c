package controlplane_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// The linearizability test treats the ledger as one object, a counter: its state is
// the ledger's last seq (the number of committed events). Clients append one event at
// a time through raft (Store.Propose of an IngestBatch on the node they talk to) and
// read the last seq through the admin API (ListEvents: Backend.ConsistentRead first;
// the client follows a follower's redirect to the leader), while a fault goroutine
// partitions the leader (or a follower) away from the others and heals again. Every
// call and return is timed, and porcupine checks that some order of the operations,
// consistent with real time, explains every output:
//
//   - a write that returned gets the seq its event was committed at: legal iff that is
//     state+1 (a write that lands in the middle, or twice, or a read that missed an
//     acknowledged write, has no legal order);
//   - a read returns the last seq: legal iff it equals the state;
//   - a write that failed (ErrNotLeader when leadership was lost under it, a timeout)
//     has an unknown outcome: it may or may not commit, then or much later. It is
//     recorded with no output and a return time after everything else in the history,
//     the usual way to model a call that never returned: the checker may put it
//     anywhere after its call, including after every other operation, where its +1 is
//     seen by nothing. Once the run is over and the cluster has healed and committed a
//     write of its own term, no such entry can still commit, so the test looks each one
//     up by its event id: when it was committed it gets the seq it got, which pins it
//     down further; when it was not, it is left out (see the end of the test).
//   - a read that failed had no effect and is dropped.
//
// This is how the test first failed: ConsistentRead was a read index (VerifyLeader,
// then wait for CommitIndex), and a leader elected just after its predecessor had
// acknowledged a write still had the older commit index until it committed an entry of
// its own term, so a read on it returned the last seq from before that write.
//
// Writes only go to a node that believes it is the leader (otherwise the client moves
// to the node named as leader without making a call): a call raft refuses at once
// would only add unknown-outcome operations, which cost the checker time and test
// nothing.

// linInput is an operation's input: a write appends the event ID; a read has none.
type linInput struct {
	Write bool
	ID    string
}

// linOutput is an operation's output: the seq a write's event got, or the last seq a
// read saw. Unknown marks a write whose outcome is not known.
type linOutput struct {
	Seq     uint64
	Unknown bool
}

// ledgerCounterModel is the sequential specification: the state is the ledger's last
// seq, starting at base.
func ledgerCounterModel(base uint64) porcupine.Model {
	return porcupine.Model{
		Init: func() any { return base },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(uint64), input.(linInput), output.(linOutput)
			if in.Write {
				if out.Unknown {
					return true, s + 1
				}
				return out.Seq == s+1, s + 1
			}
			return out.Seq == s, s
		},
		Hash: func(state any) uint64 { return state.(uint64) },
		DescribeOperation: func(input, output any) string {
			in, out := input.(linInput), output.(linOutput)
			switch {
			case !in.Write:
				return fmt.Sprintf("read() -> %d", out.Seq)
			case out.Unknown:
				return fmt.Sprintf("append(%s) -> ?", in.ID)
			}
			return fmt.Sprintf("append(%s) -> seq %d", in.ID, out.Seq)
		},
		DescribeState: func(state any) string { return fmt.Sprintf("last_seq=%d", state.(uint64)) },
	}
}

// checkHistory runs porcupine on ops. Unless the history is linearizable it writes the
// visualization into dir and returns its path.
func checkHistory(model porcupine.Model, ops []porcupine.Operation, timeout time.Duration, dir string) (porcupine.CheckResult, string, error) {
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	if res == porcupine.Ok {
		return res, "", nil
	}
	path := filepath.Join(dir, "linearizability.html")
	return res, path, porcupine.VisualizePath(model, info, path)
}

// TestLinearizabilityCheckerCanFail proves the check below can fail: the same model and
// checker reject handcrafted histories that are not linearizable, and accept their
// linearizable twins.
func TestLinearizabilityCheckerCanFail(t *testing.T) {
	w := func(client int, call, ret int64, id string, seq uint64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: linInput{Write: true, ID: id}, Call: call, Output: linOutput{Seq: seq}, Return: ret}
	}
	unknown := func(client int, call int64, id string) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: linInput{Write: true, ID: id}, Call: call, Output: linOutput{Unknown: true}, Return: 1000}
	}
	r := func(client int, call, ret int64, seq uint64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: linInput{}, Call: call, Output: linOutput{Seq: seq}, Return: ret}
	}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		// A read that starts after a write was acknowledged must see it.
		{"stale read after an acknowledged write", []porcupine.Operation{w(0, 0, 10, "a", 1), r(1, 20, 30, 0)}, porcupine.Illegal},
		{"read after an acknowledged write", []porcupine.Operation{w(0, 0, 10, "a", 1), r(1, 20, 30, 1)}, porcupine.Ok},
		{"read concurrent with a write, old value", []porcupine.Operation{w(0, 0, 10, "a", 1), r(1, 5, 30, 0)}, porcupine.Ok},
		// Once a read saw a write, a later read cannot go back in time.
		{"reads go back in time", []porcupine.Operation{w(0, 0, 100, "a", 1), r(1, 10, 20, 1), r(2, 30, 40, 0)}, porcupine.Illegal},
		// Two writes cannot get the same seq, nor leave a gap.
		{"two writes get one seq", []porcupine.Operation{w(0, 0, 10, "a", 1), w(1, 0, 10, "b", 1)}, porcupine.Illegal},
		{"a write skips a seq", []porcupine.Operation{w(0, 0, 10, "a", 2)}, porcupine.Illegal},
		{"concurrent writes in either order", []porcupine.Operation{w(0, 0, 10, "a", 2), w(1, 0, 10, "b", 1)}, porcupine.Ok},
		// A write with an unknown outcome may happen (late) or not at all, but only once.
		{"unknown write happens late", []porcupine.Operation{unknown(0, 0, "a"), r(1, 10, 20, 0), r(1, 30, 40, 1)}, porcupine.Ok},
		{"unknown write never happens", []porcupine.Operation{unknown(0, 0, "a"), r(1, 10, 20, 0), w(1, 30, 40, "b", 1), r(1, 50, 60, 1)}, porcupine.Ok},
		{"unknown write counted twice", []porcupine.Operation{unknown(0, 0, "a"), r(1, 10, 20, 2)}, porcupine.Illegal},
		{"unknown write undone", []porcupine.Operation{unknown(0, 0, "a"), r(1, 10, 20, 1), r(1, 30, 40, 0)}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, path, err := checkHistory(ledgerCounterModel(0), tc.ops, 10*time.Second, t.TempDir())
			if err != nil {
				t.Fatalf("visualize: %v", err)
			}
			if res != tc.want {
				t.Fatalf("checker says %s, want %s", res, tc.want)
			}
			if res == porcupine.Illegal {
				if st, err := os.Stat(path); err != nil || st.Size() == 0 {
					t.Fatalf("no visualization at %s: %v", path, err)
				}
			}
		})
	}
}

// linHistory records operations from concurrent clients.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// now is the time since the start, from the monotonic clock.
func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// leaderWatch records which node led each raft term it saw.
type leaderWatch struct {
	mu    sync.Mutex
	terms map[uint64]string
}

func (w *leaderWatch) poll(c *controlplanetest.Cluster) {
	for _, n := range c.Nodes {
		r := n.Store().Raft()
		term := r.CurrentTerm()
		if n.Store().IsLeader() && r.CurrentTerm() == term {
			w.mu.Lock()
			w.terms[term] = n.Store().NodeID()
			w.mu.Unlock()
		}
	}
}

// leaders returns the leader of each term seen, in term order, and how many times the
// leader changed from one term to the next.
func (w *leaderWatch) leaders() (seq []string, changes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	terms := make([]uint64, 0, len(w.terms))
	for term := range w.terms {
		terms = append(terms, term)
	}
	slices.Sort(terms)
	for i, term := range terms {
		seq = append(seq, fmt.Sprintf("t%d:%s", term, w.terms[term]))
		if i > 0 && w.terms[term] != w.terms[terms[i-1]] {
			changes++
		}
	}
	return seq, changes
}

// adminClients returns an admin client for each node of c (each follows a follower's
// redirect to the leader, as the CLI's does).
func adminClients(t *testing.T, c *controlplanetest.Cluster) []adminv1connect.AdminServiceClient {
	t.Helper()
	base, err := cliconfig.Load(c.Nodes[0].AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var out []adminv1connect.AdminServiceClient
	for _, n := range c.Nodes {
		cfg := *base
		cfg.Addr = n.Addr()
		client, closeFn, err := cfg.AdminClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(closeFn)
		out = append(out, client)
	}
	return out
}

// linClient is one client of the linearizability test. Its operations are sequential.
type linClient struct {
	id     int
	c      *controlplanetest.Cluster
	admins []adminv1connect.AdminServiceClient
	h      *linHistory
	rng    *rand.Rand

	cur      int    // index of the node this client writes to
	agentSeq uint64 // the agent_seq of its last write

	unknown                  []porcupine.Operation // writes with unknown outcome
	writes, reads, readFails int
	errs                     []string
}

// nextNode moves the client to the node its current node names as leader, or to the
// next node when that is unknown.
func (cl *linClient) nextNode() {
	_, id := cl.c.Nodes[cl.cur].Store().Leader()
	for i, n := range cl.c.Nodes {
		if i != cl.cur && n.Store().NodeID() == id {
			cl.cur = i
			return
		}
	}
	cl.cur = (cl.cur + 1) % len(cl.c.Nodes)
}

func (cl *linClient) write(ctx context.Context) {
	n := cl.c.Nodes[cl.cur]
	if !n.Store().IsLeader() {
		cl.nextNode()
		pause(ctx, 2*time.Millisecond) // a client's back-off before it tries again
		return
	}
	cl.agentSeq++
	id := fmt.Sprintf("lin-c%d-%d", cl.id, cl.agentSeq)
	ev := &eventv1.Event{
		Id: id, Type: "inventory.level", Keys: map[string]string{"sku": fmt.Sprintf("L%d", cl.id), "location": "WH1"},
		Source: &eventv1.Source{Position: id},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
			Sku: fmt.Sprintf("L%d", cl.id), Location: "WH1", OnHand: fmt.Sprint(cl.agentSeq),
		}},
	}
	b := &storev1.IngestBatch{AgentId: fmt.Sprintf("lin-c%d", cl.id), Events: []*storev1.AgentEvent{{AgentSeq: cl.agentSeq, Event: ev}}}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	type answer struct {
		res any
		err error
	}
	// Propose's wait for the entry is not bounded (raft answers when it commits, when
	// leadership is lost or at shutdown): give up on it after a while, so that the test
	// cannot hang; the entry then has an unknown outcome like any failed write.
	done := make(chan answer, 1)
	op := porcupine.Operation{ClientId: cl.id, Input: linInput{Write: true, ID: id}, Call: cl.h.now()}
	go func() {
		res, err := n.Store().Propose(pctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
		done <- answer{res, err}
	}()
	var res any
	var err error
	select {
	case a := <-done:
		res, err = a.res, a.err
	case <-time.After(5 * time.Second):
		err = fmt.Errorf("no answer in 5s")
	}
	op.Return = cl.h.now()
	if err != nil {
		// Leadership lost under the call, no answer: the entry may still commit.
		op.Output = linOutput{Unknown: true}
		cl.unknown = append(cl.unknown, op)
		cl.nextNode()
		return
	}
	r, ok := res.(*storev1.IngestResult)
	if !ok || r.GetCommitted() != 1 || r.GetDuplicates() != 0 {
		cl.errs = append(cl.errs, fmt.Sprintf("write %s answered %v (%T), want one event committed", id, res, res))
		return
	}
	op.Output = linOutput{Seq: r.GetLastLedgerSeq()}
	cl.h.add(op)
	cl.writes++
}

// read reads through a node picked at random.
func (cl *linClient) read(ctx context.Context) { cl.readFrom(ctx, cl.rng.IntN(len(cl.admins))) }

// readFrom reads through node i and reports whether the read succeeded.
func (cl *linClient) readFrom(ctx context.Context, i int) bool {
	a := cl.admins[i]
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	op := porcupine.Operation{ClientId: cl.id, Input: linInput{}, Call: cl.h.now()}
	res, err := a.ListEvents(rctx, connect.NewRequest(&adminv1.ListEventsRequest{Limit: 1}))
	op.Return = cl.h.now()
	if err != nil {
		// No leader, a deposed leader, a redirect to a stale leader: a read that
		// failed changed nothing.
		cl.readFails++
		pause(ctx, 2*time.Millisecond) // a client's back-off before it tries again
		return false
	}
	op.Output = linOutput{Seq: res.Msg.GetLastSeq()}
	cl.h.add(op)
	cl.reads++
	return true
}

// TestLinearizability checks that writes (appends through raft) and consistent reads
// (admin ListEvents) of a 3-node cluster are linearizable while the leader is
// repeatedly partitioned away; see the comment at the top of this file.
func TestLinearizability(t *testing.T) {
	const (
		clients   = 4
		runFor    = 9 * time.Second
		partition = 1200 * time.Millisecond // > 2 election timeouts: the majority elects a new leader
		healed    = 500 * time.Millisecond
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

	// Faults: cut the leader off (two rounds in three) or a follower (the third), keep
	// it cut off long enough for an election, heal, let the cluster settle, repeat. The
	// leader is cut off right after it acknowledged a write of the nemesis (a client
	// like the others, in the history): the followers have the entry but may not know
	// yet that it is committed, the hard case for the next leader's reads.
	var faultLog []string
	nemesis := &linClient{id: clients, c: c, admins: admins, h: h, rng: rand.New(rand.NewPCG(98, 42))}
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
		for round := 0; sleep(healed); round++ {
			victim := c.Leader()
			for waited := time.Now(); victim == nil && time.Since(waited) < time.Second && sleep(5*time.Millisecond); {
				victim = c.Leader()
			}
			what := "leader"
			if victim == nil || round%3 == 2 {
				victim = c.Nodes[(round/3)%len(c.Nodes)]
				what = "node"
				if victim.Store().IsLeader() {
					victim = c.Nodes[(round/3+1)%len(c.Nodes)]
				}
			}
			var rest []*controlplanetest.Server
			for i, n := range c.Nodes {
				if n != victim {
					rest = append(rest, n)
				} else if what == "leader" {
					nemesis.cur = i
					nemesis.write(ctx)
				}
			}
			c.Faults.Partition(controlplanetest.RaftAddrs(victim), controlplanetest.RaftAddrs(rest...))
			cutAt := time.Now()
			faultLog = append(faultLog, fmt.Sprintf("%.2fs: partition %s %s", time.Duration(h.now()).Seconds(), what, victim.Store().NodeID()))
			// Then read on the new leader as soon as it is elected, before it may
			// have committed anything in its term.
		probe:
			for what == "leader" && time.Since(cutAt) < partition {
				for i, n := range c.Nodes {
					if n != victim && n.Store().IsLeader() && nemesis.readFrom(ctx, i) {
						break probe
					}
				}
				if !sleep(time.Millisecond) {
					break
				}
			}
			ok := sleep(max(0, partition-time.Since(cutAt)))
			c.Faults.Heal()
			if !ok {
				return
			}
		}
	})

	cls := make([]*linClient, clients)
	var wg sync.WaitGroup
	for i := range cls {
		cl := &linClient{id: i, c: c, admins: admins, h: h, rng: rand.New(rand.NewPCG(uint64(i), 42)), cur: i % len(c.Nodes)}
		cls[i] = cl
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if cl.rng.IntN(2) == 0 {
					cl.write(ctx)
				} else {
					cl.read(ctx)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	ran := time.Duration(h.now())

	// Healed: a leader of a new term commits a write of its own (a last operation of
	// the history, like a last read), after which no entry proposed during the run can
	// commit any more; every node then holds the same ledger.
	c.WaitLeader(nil)
	final := &linClient{id: clients + 1, c: c, admins: admins, h: h, rng: rand.New(rand.NewPCG(99, 42))}
	controlplanetest.WaitFor(t, 30*time.Second, "a final write and read", func() bool {
		if final.writes == 0 {
			final.write(ctx)
		} else if final.reads == 0 {
			final.read(ctx)
		}
		return final.writes > 0 && final.reads > 0
	})
	watch.poll(c)
	c.WaitConverged()
	leader := c.Leader()

	// Resolve writes of unknown outcome from the ledger, by event id.
	end := h.now() + 1
	var unknown, resolved, lost int
	var errs []string
	for _, cl := range append(cls, nemesis, final) {
		errs = append(errs, cl.errs...)
		for _, op := range cl.unknown {
			unknown++
			op.Return = end
			ce, ok, err := leader.Store().Ledger().EventByID(op.Input.(linInput).ID)
			switch {
			case err != nil:
				t.Fatalf("look up %s: %v", op.Input.(linInput).ID, err)
			case ok:
				op.Output = linOutput{Seq: ce.GetSeq()}
				resolved++
			default:
				// Never committed, and now it never will: an operation without effect
				// that never returned is the same as no operation. (Kept as an unknown
				// +1, porcupine would place it last, but only after trying it
				// everywhere else first: a few of them make the check 1000x slower.)
				lost++
				continue
			}
			h.add(op)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%d bad answers, first: %s", len(errs), errs[0])
	}

	var writes, reads, readFails int
	for _, cl := range append(cls, nemesis, final) {
		writes, reads, readFails = writes+cl.writes, reads+cl.reads, readFails+cl.readFails
	}
	seqs, changes := watch.leaders()
	t.Logf("ran %s: %d ops checked (%d acknowledged writes, %d reads, %d writes of unknown outcome: %d committed, %d not; %d failed reads dropped); final last_seq %d (base %d)",
		ran.Round(time.Millisecond), len(h.ops), writes, reads, unknown, resolved, lost, readFails, leader.Store().Ledger().LastSeq(), base)
	t.Logf("faults: %s", strings.Join(faultLog, "; "))
	t.Logf("leaders by term: %s (%d leader changes)", strings.Join(seqs, " "), changes)

	// Every committed write is in the ledger once; the checker needs no more than this,
	// but a count mismatch is a clearer message than an illegal history.
	if got, want := leader.Store().Ledger().LastSeq()-base, uint64(writes+resolved); got != want {
		t.Errorf("ledger grew by %d events, but %d writes were acknowledged or found committed", got, want)
	}
	if changes < 1 {
		t.Errorf("the leader never changed during the run (leaders by term: %v): the faults did not test failover", seqs)
	}
	if writes < 50 || reads < 50 {
		t.Errorf("only %d writes and %d reads succeeded: too few to test anything", writes, reads)
	}

	requireLinearizable(t, model, h.ops, "crossdock-linearizability-")
}

// pause waits d or until ctx ends: the client's back-off after a failed operation.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// requireLinearizable checks a history with porcupine and fails the test when it is not
// linearizable or the check times out. The visualization goes to a directory (named
// after prefix) that outlives the test (t.TempDir is removed when it ends, failed or
// not); it is removed again when the history is fine.
func requireLinearizable(t *testing.T, model porcupine.Model, ops []porcupine.Operation, prefix string) {
	t.Helper()
	start := time.Now()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	res, path, err := checkHistory(model, ops, 20*time.Second, dir)
	t.Logf("porcupine: %s in %s", res, time.Since(start).Round(time.Millisecond))
	switch {
	case res == porcupine.Ok:
		os.RemoveAll(dir)
	case err != nil:
		t.Fatalf("history is not linearizable (%s), and writing the visualization failed: %v", res, err)
	case res == porcupine.Unknown:
		t.Fatalf("porcupine timed out; partial linearizations in %s", path)
	default:
		t.Fatalf("history is NOT linearizable; visualization (open in a browser): %s", path)
	}
}
