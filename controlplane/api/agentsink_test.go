package api_test

import (
	"context"

	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestAgentSinkDownlink: a destination of kind "agent" delivers committed events over
// the agent's own uplink stream to a sink connector run by the agent's plugin host (the
// example plugin built as a real binary, which appends events to a file idempotently by
// event id). Orders reach the file once each and come back as order.ack events with the
// sink's number; a destination naming a connector the agent does not have dead-letters
// with the agent's reason.
func TestAgentSinkDownlink(t *testing.T) {
	dir := t.TempDir()
	bin, sum := testutil.BuildPlugin(t, "github.com/crossdock/crossdock/plugins/example")
	sinkFile := filepath.Join(dir, "erp-orders.jsonl")
	settings, _ := json.Marshal(map[string]any{"sku": "UNUSED", "count": 1, "sink_file": sinkFile})

	srv := controlplanetest.TestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := agent.New(ctx, agent.Config{
		DataDir: t.TempDir(), Servers: []string{srv.Addr()}, EnrollToken: srv.Token(t, time.Minute, "erp-agent"),
		LocalAddr: "-", Logger: controlplanetest.Logger(t),
		Connectors: []pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: settings, NoSource: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	docs := `
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: erp-orders}
spec: {type: agent, agent: erp-agent, connector: erp}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: nowhere}
spec: {type: agent, agent: erp-agent, connector: not-configured}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: orders-to-erp}
spec:
  match: {types: [order]}
  destinations: [erp-orders, nowhere]
`
	applyDocs(t, srv, docs)

	// Orders from a sales channel, committed directly (the ledger does not care who sent them).
	const n = 20
	batch := &storev1.IngestBatch{AgentId: "marketplace"}
	for i := range n {
		num := fmt.Sprintf("PO-%03d", i)
		batch.Events = append(batch.Events, &storev1.AgentEvent{AgentSeq: uint64(i + 1), Event: &eventv1.Event{
			Id: "ev_order_" + num, Type: "order", Keys: map[string]string{"order": num},
			Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: num, Customer: "ACME",
				Lines: []*eventv1.OrderLine{{LineNumber: "1", Sku: "SKU-1", Quantity: "2"}}}},
		}})
	}
	if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, batch); err != nil {
		t.Fatal(err)
	}

	testutil.WaitFor(t, time.Minute, "20 orders written by the agent's sink connector", func() bool {
		b, _ := os.ReadFile(sinkFile)
		return strings.Count(string(b), "\n") >= n
	})
	b, _ := os.ReadFile(sinkFile)
	seen := map[string]int{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		// The example sink writes "<event id> <what it wrote>" per event.
		id, _, _ := strings.Cut(line, " ")
		seen[id]++
	}
	for i := range n {
		if id := fmt.Sprintf("ev_order_PO-%03d", i); seen[id] != 1 {
			t.Errorf("%s written %d times, want 1", id, seen[id])
		}
	}

	l := srv.Store().Ledger()
	// Each order written comes back as an order.ack with the number the sink gave it
	// (the example sink numbers lines "line-N"), committed once per order.
	testutil.WaitFor(t, time.Minute, "an order.ack per order in the ledger", func() bool {
		acks, _, err := l.ListEvents(ledger.Filter{Type: "order.ack"}, 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(acks) >= n
	})
	acks, _, err := l.ListEvents(ledger.Filter{Type: "order.ack"}, 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{}
	for _, ce := range acks {
		a := ce.GetEvent().GetOrderAck()
		if ce.GetAgent() != "erp-agent" || !strings.HasPrefix(a.GetErpOrderNumber(), "line-") || a.GetStatus() != "accepted" {
			t.Fatalf("order.ack %v", ce)
		}
		// The contract's id and key: the order view joins the ack by key order.
		if ce.GetEvent().GetId() != canonical.OrderAckEventID(a.GetOrderNumber()) || ce.GetEvent().GetKeys()["order"] != a.GetOrderNumber() {
			t.Fatalf("order.ack id %q keys %v", ce.GetEvent().GetId(), ce.GetEvent().GetKeys())
		}
		if _, dup := acked[a.GetOrderNumber()]; dup {
			t.Fatalf("order %s acknowledged twice", a.GetOrderNumber())
		}
		acked[a.GetOrderNumber()] = a.GetErpOrderNumber()
	}
	if len(acked) != n {
		t.Fatalf("%d orders acknowledged, want %d", len(acked), n)
	}

	testutil.WaitFor(t, time.Minute, "orders for the unknown connector dead-lettered", func() bool {
		dls, err := l.DeadLetters(ledger.DeadLetterFilter{Destination: "nowhere"})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) < n {
			return false
		}
		for _, d := range dls {
			if !strings.Contains(d.GetError(), "not-configured") {
				t.Fatalf("dead letter reason %q does not name the connector", d.GetError())
			}
		}
		return true
	})
}

// applyDocs applies routing documents the way `crossdock apply` does.
func applyDocs(t *testing.T, srv *controlplanetest.Server, src string) {
	t.Helper()
	c, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	rc := routingv1connect.NewRoutingServiceClient(hc, base)
	if _, err := rc.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: src})); err != nil {
		t.Fatalf("apply: %v", err)
	}
}
