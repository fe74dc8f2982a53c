package delivery_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestDeadLetterRetryAfterPrune: dead letters whose events retention removed are
// retried with the payload they were dead-lettered with, under the event's id.
func TestDeadLetterRetryAfterPrune(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.PruneInterval = time.Hour })
	_, downURL := market(t, samplemarket.Config{FailRate: 1})
	good, goodURL := market(t, samplemarket.Config{})
	pol := routing.Policy{MaxAttempts: 2, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, FailureThreshold: 100, Cooldown: 10 * time.Millisecond}
	plans := &switchPlan{p: &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: downURL, Secret: testSecret, Policy: pol}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: plans, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	runEngineWith(t, e)
	src := newSource(t)
	src.commit(srv.Store(), level{"A", "1"}, level{"B", "2"}, level{"C", "3"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"})
	if len(dls) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dls))
	}
	// Other traffic (no route takes it) past one key index flush, then a prune of the
	// first events.
	ctx := t.Context()
	for i := 0; i < 4; i++ {
		b := &storev1.IngestBatch{AgentId: "other"}
		for j := 1; j <= 5000; j++ {
			n := i*5000 + j
			b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(n), Event: &eventv1.Event{Id: fmt.Sprintf("o-%d", n), Type: "order"}})
		}
		if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, &storev1.PruneLedger{DefaultBelow: 10}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.ListEvents(ledger.Filter{}, dls[0].GetSeq(), 1); !errors.Is(err, ledger.ErrPruned) {
		t.Fatalf("the dead-lettered events are still held: %v", err)
	}
	// The receiver is back (another URL); retry every dead letter.
	plans.set(&delivery.Plan{Version: "2", Routes: plans.get().Routes,
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: goodURL, Secret: testSecret, Policy: pol}}})
	// The old destination's worker would retry them to the old URL until the engine
	// takes the new plan (it looks every Poll).
	waitPlan(t, e, "2")
	if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, &storev1.ResolveDeadLetters{
		Destination: "shop", State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "retried dead letters delivered", func() bool {
		open, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop", States: []storev1.DeadLetterState{
			storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN, storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}})
		return len(open) == 0
	})
	got := map[string]string{}
	for _, p := range received(t, good.Requests()) {
		got[p.SKU] = p.ID
	}
	for _, d := range dls {
		if got[d.GetKeys()["sku"]] != d.GetEventId() {
			t.Fatalf("retry of %s: received %v, want the original payload with event id %s", d.GetKeys()["sku"], got, d.GetEventId())
		}
	}
}
