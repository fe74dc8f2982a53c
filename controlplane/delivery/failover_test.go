package delivery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
)

// The leader is stopped, or cut off from the other nodes, while it delivers: the new
// leader resumes from the committed cursor. No event is skipped, and every event sent
// twice is at or above the cursor committed when the leader was lost (the in-flight
// window) and carries the same idempotency key both times. The test fails when every
// event was already delivered when the leader was lost (the fault came too late).
//
// Per key, the receiver sees the events in ledger order: a seq lower than one already
// received for the same key is allowed only as an exact repeat (same id, same body) of
// a message received before, at or above the failover cursor.
func TestLeaderFailoverDuringDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	for _, mode := range []string{"stop", "partition"} {
		t.Run(mode, func(t *testing.T) { leaderFailover(t, mode) })
	}
}

func leaderFailover(t *testing.T, mode string) {
	c := controlplanetest.TestCluster(t, 3, nil)
	m, url := market(t, samplemarket.Config{})
	const window = 200
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: url, Secret: testSecret,
			Policy: routing.Policy{RatePerSecond: 500, Burst: 10}, Window: window}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	for _, n := range c.Nodes {
		runEngine(t, n.Store(), plan)
	}
	src := newSource(t)
	old := c.WaitLeader(nil)
	batch := func(from, n int) []level {
		var lv []level
		for i := from; i < from+n; i++ {
			lv = append(lv, level{sku: fmt.Sprintf("SKU-%d", i%100), qty: fmt.Sprint(i)})
		}
		return lv
	}
	for i := 0; i < 3000; i += 300 {
		src.commit(old.Store(), batch(i, 300)...)
	}
	controlplanetest.WaitFor(t, time.Minute, "a third of the events delivered", func() bool { return m.Stats().Requests >= 1000 })
	var others []*controlplanetest.Server
	for _, n := range c.Nodes {
		if n != old {
			others = append(others, n)
		}
	}
	follower := others[0]
	// Still delivering when the leader is lost: some of the events committed so far
	// have not reached the receiver.
	deliveredAtLoss := map[string]bool{}
	for _, p := range received(t, m.Requests()) {
		deliveredAtLoss[p.ID] = true
	}
	if len(deliveredAtLoss) >= 3000 {
		t.Fatalf("all %d events were delivered before the leader was lost: the failover came too late to test anything", len(deliveredAtLoss))
	}
	if mode == "stop" {
		old.Stop()
	} else {
		c.Faults.Partition(controlplanetest.RaftAddrs(old), controlplanetest.RaftAddrs(others...))
	}
	// No leader can commit a cursor until one is elected: this is the failover cursor.
	cur, _, err := follower.Store().Ledger().DeliveryCursor("shop")
	if err != nil {
		t.Fatal(err)
	}
	atFailover := cur.GetSeq()
	deliveredBefore := len(received(t, m.Requests()))
	nl := c.WaitLeader(old)
	if mode == "partition" {
		// The cut-off node steps down once its lease ends; its engine stops with it.
		controlplanetest.WaitFor(t, 10*time.Second, "the old leader to step down", func() bool { return !old.Store().IsLeader() })
	}
	for i := 3000; i < 4000; i += 250 {
		src.commit(nl.Store(), batch(i, 250)...)
	}
	waitCursor(t, nl.Store().Ledger(), "shop", 2*time.Minute)

	seen := map[string]int{}
	var dupSeqs []uint64
	for _, r := range m.Requests() {
		p := received(t, []samplemarket.Request{r})[0]
		if r.ID != p.ID {
			t.Fatalf("webhook-id %q carries event %q: the idempotency key must be the event id", r.ID, p.ID)
		}
		if seen[p.ID]++; seen[p.ID] == 2 {
			dupSeqs = append(dupSeqs, p.Seq)
		}
	}
	for id := range src.ids {
		if seen[id] == 0 {
			t.Errorf("event %s was never delivered", id)
		}
	}
	checkKeyOrder(t, m.Requests(), atFailover)
	for _, s := range dupSeqs {
		if s < atFailover {
			t.Errorf("seq %d sent twice, below the cursor %d committed at failover", s, atFailover)
		}
	}
	if len(dupSeqs) > window {
		t.Errorf("%d events sent twice; the in-flight window is %d", len(dupSeqs), window)
	}
	t.Logf("cursor at failover %d, %d messages (%d events) delivered by the old leader, %d sent twice", atFailover, deliveredBefore, len(deliveredAtLoss), len(dupSeqs))
	got := m.Quantities()
	for sku, want := range src.latest {
		if got[sku] != want {
			t.Errorf("%s: receiver has %q, source %q", sku, got[sku], want)
		}
	}
	// Cursors are replicated state: every node ends with the same ledger.
	c.Faults.Heal()
	c.WaitConverged()
}

// checkKeyOrder checks the receiver got each key's events in ledger order: a message
// whose seq is not above the highest seq received for its key must be an exact repeat
// (same id and body) of a message received before, at or above the failover cursor.
func checkKeyOrder(t *testing.T, reqs []samplemarket.Request, atFailover uint64) {
	t.Helper()
	high := map[string]uint64{}   // sku -> highest seq received
	bodies := map[string]string{} // event id -> the message as first received
	first := map[string]int{}     // event id -> the request it first came in
	for i, r := range reqs {
		for _, msg := range r.Messages {
			p := received(t, []samplemarket.Request{{ID: r.ID, Messages: []samplemarket.Message{msg}}})[0]
			prev, repeat := bodies[p.ID]
			switch {
			case p.Seq > high[p.SKU]:
				if repeat && prev != string(msg.Raw) {
					t.Fatalf("request %d: event %s (seq %d) sent again with another body:\n%s\nfirst:\n%s", i, p.ID, p.Seq, msg.Raw, prev)
				}
				high[p.SKU] = p.Seq
			case !repeat:
				t.Fatalf("request %d: %s seq %d (%s) received after seq %d of the same key: per-key order broken", i, p.SKU, p.Seq, p.ID, high[p.SKU])
			case prev != string(msg.Raw):
				t.Fatalf("request %d: event %s (seq %d) sent again with another body:\n%s\nfirst:\n%s", i, p.ID, p.Seq, msg.Raw, prev)
			case p.Seq < atFailover:
				f := reqs[first[p.ID]]
				t.Fatalf("request %d: %s seq %d repeated after seq %d, below the cursor %d committed at failover (first in request %d at %s, status %d; again at %s, status %d)",
					i, p.SKU, p.Seq, high[p.SKU], atFailover, first[p.ID], f.At.Format(time.RFC3339Nano), f.Status, r.At.Format(time.RFC3339Nano), r.Status)
			}
			if !repeat {
				bodies[p.ID] = string(msg.Raw)
				first[p.ID] = i
			}
		}
	}
}
