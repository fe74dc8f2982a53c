package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// TestEndToEndKillAgentBetweenERPWriteAndAck runs the control plane and an agent as
// processes of the built binary, the agent with the built-in Tryton connector (a plugin
// subprocess) writing partners' orders into a real Tryton. The agent SIGKILLs itself
// right after Tryton created and confirmed the sale and before it published the
// order.ack (the fault-injection hook of agent_fault.go, armed by a trigger file: the
// kill happens at exactly that point, once). Restarted, the agent is sent the order
// again (its write was never reported), Tryton's sale is found by the event id stored
// on it, and the ack is published with its fixed id: the order exists once in Tryton,
// once in the ledger, and is acknowledged once, accepted with the sale's number.
func TestEndToEndKillAgentBetweenERPWriteAndAck(t *testing.T) {
	tr := testsvc.StartTryton(t)
	var uoms []int64
	tr.Into(t, &uoms, "product.uom", "search", []any{[]any{"symbol", "=", "u"}}, 0, 1, nil)
	tr.Model(t, "product.template", "create", []any{map[string]any{
		"name": "Kill test", "type": "goods", "default_uom": uoms[0], "salable": true, "sale_uom": uoms[0],
		"list_price": map[string]any{"__class__": "Decimal", "decimal": "5.00"},
		"products":   []any{[]any{"create", []any{map[string]any{"suffix_code": "KILL-1"}}}}}})
	tr.Model(t, "party.party", "create", []any{map[string]any{"name": "Kill Market", "code": "kill-market",
		"addresses": []any{[]any{"create", []any{map[string]any{"street": "1 Dock Road", "city": "Rotterdam"}}}}}})

	c := startServer(t)
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	docs := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(docs, []byte(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: tryton}
spec: {type: agent, agent: erp-kill, connector: tryton}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: partner-orders}
spec:
  match: {types: [order]}
  filter: event.order.partner != ""
  destinations: [tryton]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cli("apply", "-f", docs)
	t.Setenv("E2E_ENROLL_TOKEN", strings.TrimSpace(cli("token", "create", "--name", "erp-kill")))
	t.Setenv("E2E_TRYTON_PASSWORD", tr.Password)
	trigger := filepath.Join(t.TempDir(), "kill-once")
	if err := os.WriteFile(trigger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(faultKillAfterSinkWrite, trigger)

	agentDir, local := t.TempDir(), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`agent:
  data_dir: %s
  servers: [%q]
  local_addr: %q
  enroll_token: ${env:E2E_ENROLL_TOKEN}
connectors:
  - name: tryton
    builtin: tryton
    source: false
    settings: {url: %q, database: %q, user: %q, password: "${env:E2E_TRYTON_PASSWORD}", confirm: true, invoice_method: manual}
`, agentDir, c.addr, local, tr.URL, tr.Database, tr.User)), 0o600); err != nil {
		t.Fatal(err)
	}
	first := start(t, "agent", "agent", "--config", cfg)

	id := canonical.OrderID("kill-market", "PO-K1")
	order := fmt.Sprintf(`{"id":%q,"type":"order","keys":{"order":%q},"order":{"orderNumber":%q,"partner":"kill-market","purchaseOrderNumber":"PO-K1","lines":[{"lineNumber":"1","sku":"KILL-1","quantity":"2"}]}}`,
		canonical.OrderEventID("kill-market", "PO-K1"), id, id)
	file := filepath.Join(t.TempDir(), "order.jsonl")
	if err := os.WriteFile(file, []byte(order+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "the agent's local API", func() bool {
		_, err := agentStatus(local)
		return err == nil
	})
	if _, err := run(t, "publish", "--file", file, "--agent", local, "--connector", "partner-api"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.done:
	case <-time.After(90 * time.Second):
		t.Fatal("the agent did not kill itself after the sink write")
	}
	if _, err := os.Stat(trigger); !os.IsNotExist(err) {
		t.Fatalf("the agent exited without the fault hook firing (trigger file still there: %v)", err)
	}
	type sale struct {
		Number string `json:"number"`
		State  string `json:"state"`
	}
	var sales []sale
	tr.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", id}}, 0, nil, nil, []string{"number", "state"})
	if len(sales) != 1 || sales[0].State == "draft" || sales[0].State == "quotation" {
		t.Fatalf("sales in Tryton after the kill: %+v, want one confirmed", sales)
	}
	for _, ev := range c.allEvents(t) {
		if ev.GetEvent().GetType() == "order.ack" {
			t.Fatalf("an order.ack was committed before the kill: %v", ev)
		}
	}

	start(t, "agent-run2", "agent", "--config", cfg)
	var acks, orders []*eventv1.CommittedEvent
	controlplanetest.WaitFor(t, 90*time.Second, "the order.ack after the restart", func() bool {
		acks, orders = nil, nil
		for _, ev := range c.allEvents(t) {
			switch ev.GetEvent().GetType() {
			case "order.ack":
				acks = append(acks, ev)
			case "order":
				orders = append(orders, ev)
			}
		}
		return len(acks) > 0
	})
	sales = nil
	tr.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", id}}, 0, nil, nil, []string{"number", "state"})
	if len(sales) != 1 {
		t.Fatalf("%d sales in Tryton for order %s, want 1: %+v", len(sales), id, sales)
	}
	if len(orders) != 1 || len(acks) != 1 {
		t.Fatalf("ledger holds %d orders and %d acks, want 1 and 1", len(orders), len(acks))
	}
	a := acks[0].GetEvent()
	if a.GetId() != canonical.OrderAckEventID(id) || a.GetOrderAck().GetStatus() != "accepted" || a.GetOrderAck().GetErpOrderNumber() != sales[0].Number {
		t.Fatalf("order.ack %v, want accepted with Tryton's number %s", a, sales[0].Number)
	}
}
