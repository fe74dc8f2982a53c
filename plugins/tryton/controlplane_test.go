package tryton_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
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

// testPluginHost: the same path with nothing in-process: the connector runs as a plugin
// process under the agent's plugin host, whose batches go into the agent's outbox and on
// to a real control plane; a write through the host creates a sale in Tryton.
func testPluginHost(t *testing.T, e *erp) {
	bin, sum := buildPlugin(t)
	srv := controlplanetest.TestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{srv.Addr()},
		EnrollToken: srv.Token(t, time.Minute, "erp-agent-2"), LocalAddr: "-", Logger: controlplanetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	host, err := pluginhost.New(pluginhost.Options{AgentID: a.ID(), Outbox: a.Outbox(), Logger: controlplanetest.Logger(t),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second},
		[]pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: e.settings("")}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.Run(runCtx) }()
	go func() { defer wg.Done(); host.Run(runCtx) }()
	t.Cleanup(func() { stop(); wg.Wait() })

	p := e.product(t, "PH-1")
	e.party(t, "C-PH")
	e.move(t, p, e.supplier, e.storage, 11)
	l := srv.Store().Ledger()
	testutil.WaitFor(t, 60*time.Second, "inventory level PH-1@WH = 11 in the control plane's ledger", func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "inventory.level", Keys: map[string]string{"sku": "PH-1"}}, 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ce := range evs {
			if ce.Event.GetInventoryLevel().GetOnHand() == "11" && ce.Event.Source.GetConnector() == "erp" {
				return true
			}
		}
		return false
	})
	st := host.Status()[0]
	if st.State != pluginhost.StateRunning || !st.Source || !st.Sink || st.Version != tryton.Version {
		t.Fatalf("connector status %v", st)
	}

	ev := &eventv1.Event{Id: "evt-ph-1", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
		OrderNumber: "WEB-PH-1", Customer: "C-PH", Lines: []*eventv1.OrderLine{{Sku: "PH-1", Quantity: "4"}}}}}
	res, err := host.Write(ctx, "erp", []*eventv1.Event{ev})
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Ref == "" {
		t.Fatalf("Write through the plugin host = %+v, %v", res, err)
	}
	var sales []struct {
		Number string `json:"number"`
	}
	e.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", "WEB-PH-1"}}, 0, nil, nil, []string{"number"})
	if len(sales) != 1 || sales[0].Number != res[0].Ref {
		t.Fatalf("sales in Tryton %+v, Ref %q", sales, res[0].Ref)
	}
	// A permanent error keeps its kind across the plugin boundary.
	bad := &eventv1.Event{Id: "evt-ph-2", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
		OrderNumber: "WEB-PH-2", Customer: "C-PH", Lines: []*eventv1.OrderLine{{Sku: "NOPE", Quantity: "1"}}}}}
	res, err = host.Write(ctx, "erp", []*eventv1.Event{bad})
	if err != nil || !errors.Is(res[0].Err, sdk.ErrPermanent) || !strings.Contains(res[0].Err.Error(), "NOPE") {
		t.Fatalf("bad order through the plugin host = %+v, %v", res, err)
	}
}

// buildPlugin builds testdata/plugin, the connector as a plugin binary.
func buildPlugin(t *testing.T) (path, sum string) {
	t.Helper()
	return testutil.BuildPlugin(t, "./testdata/plugin")
}
