package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// fakeSink stands in for the agents' downlink, which does not exist yet: it is the
// AgentSink contract with injected faults (every third call fails once as if the agent
// were offline; one SKU is refused for good).
type fakeSink struct {
	mu    sync.Mutex
	calls int
	got   []string // agent/connector/id
	qty   map[string]string
	order map[string]uint64
	bad   error
}

func (f *fakeSink) Deliver(_ context.Context, agent, connector, id string, ev *eventv1.Event, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls%3 == 0 {
		return errors.New("agent offline")
	}
	var p stockPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("%w: %v", delivery.ErrPermanent, err)
	}
	if ev.GetId() != id || ev.GetInventoryLevel().GetSku() != p.SKU {
		return fmt.Errorf("%w: event %s (%s) does not match message %s (%s)", delivery.ErrPermanent, ev.GetId(), ev.GetInventoryLevel().GetSku(), id, p.SKU)
	}
	if p.SKU == "NOPE" {
		return fmt.Errorf("%w: the ERP has no item NOPE", delivery.ErrPermanent)
	}
	if p.Seq < f.order[p.SKU] && f.bad == nil {
		f.bad = fmt.Errorf("%s: seq %d after %d", p.SKU, p.Seq, f.order[p.SKU])
	}
	f.order[p.SKU] = p.Seq
	f.got = append(f.got, agent+"/"+connector+"/"+id)
	f.qty[p.SKU] = p.Quantity
	return nil
}

func TestAgentSinkDestination(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	sink := &fakeSink{qty: map[string]string{}, order: map[string]uint64{}}
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "erp-west", Kind: delivery.KindAgent, Agent: "west-1", Connector: "tryton",
			Policy: routing.Policy{InitialBackoff: 5 * time.Millisecond, FailureThreshold: 100}}},
		Routes: []delivery.Route{stockRoute("po", "erp-west")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, AgentSink: sink, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond})
	runEngineWith(t, e)
	src := newSource(t)
	var lv []level
	for i := range 60 {
		lv = append(lv, level{sku: fmt.Sprintf("S%d", i%6), qty: fmt.Sprint(i)})
	}
	lv = append(lv, level{"NOPE", "1"})
	src.commit(srv.Store(), lv...)
	l := srv.Store().Ledger()
	waitCursor(t, l, "erp-west", 30*time.Second)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.bad != nil {
		t.Fatal(sink.bad)
	}
	for sku, want := range src.latest {
		if sku != "NOPE" && sink.qty[sku] != want {
			t.Errorf("%s: sink has %q, want %q", sku, sink.qty[sku], want)
		}
	}
	if len(sink.got) == 0 || !strings.HasPrefix(sink.got[0], "west-1/tryton/ev_test_") {
		t.Fatalf("deliveries %v: want agent west-1, connector tryton, the event id", sink.got[:min(3, len(sink.got))])
	}
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "erp-west"})
	if len(dls) != 1 || !strings.Contains(dls[0].GetError(), "the ERP has no item NOPE") {
		t.Fatalf("dead letters %v, want NOPE refused", dls)
	}
}
