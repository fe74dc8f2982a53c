package tryton_test

import (
	"context"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
	"github.com/crossdock/crossdock/plugins/tryton"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// testControlPlane: a stock move done in Tryton reaches a real control plane's ledger as
// an inventory level, through a real agent. The connector runs in-process here and its
// batches go into the agent's outbox the way the plugin host appends them (events with
// their own positions; the agent derives the ids).
func testControlPlane(t *testing.T, e *erp) {
	srv := controlplanetest.TestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{srv.Addr()},
		EnrollToken: srv.Token(t, time.Minute, "erp-agent"), LocalAddr: "-", Logger: controlplanetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	p := e.product(t, "E2E-1")
	c := tryton.New(controlplanetest.Logger(t))
	if err := c.Configure(ctx, e.settings("")); err != nil {
		t.Fatal(err)
	}
	readCtx, stopRead := context.WithCancel(context.Background())
	readDone := make(chan error, 1)
	go func() {
		readDone <- c.Read(readCtx, "", func(ctx context.Context, b sdk.Batch) error {
			for i, ev := range b.Events {
				ev.Source = &eventv1.Source{Position: b.EventPositions[i]}
			}
			_, err := a.Publish(ctx, "tryton", b.Events)
			return err
		})
	}()
	t.Cleanup(func() {
		stopRead()
		if err := <-readDone; err != nil {
			t.Errorf("Read: %v", err)
		}
	})

	e.move(t, p, e.supplier, e.storage, 42)
	l := srv.Store().Ledger()
	testutil.WaitFor(t, 60*time.Second, "inventory level E2E-1@WH = 42 in the control plane's ledger", func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "inventory.level", Keys: map[string]string{"sku": "E2E-1", "location": "WH"}}, 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ce := range evs {
			if ce.Event.GetInventoryLevel().GetOnHand() == "42" {
				if ce.Agent != "erp-agent" || ce.Event.Source.GetConnector() != "tryton" || ce.Event.Id == "" {
					t.Fatalf("committed event %v", ce)
				}
				return true
			}
		}
		return false
	})
}
