package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
)

const e2eOrderPartner = `apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: shop
spec:
  tier: standard
  scopes: [orders:write, orders:read]
  skus: ["A-*"]
---
apiVersion: crossdock.io/v1
kind: Tier
metadata:
  name: standard
spec:
  requestsPerSecond: 50
  burst: 50
`

// TestOrdersE2E places an order with plain HTTP calls (as curl does) on the built
// server binary, answers it as an ERP would through a real agent, reads it back with
// GET, lists and describes it with the CLI, and SIGKILLs the server: after the restart
// the order view, rebuilt from the ledger, still answers it and a resubmission is a
// duplicate.
func TestOrdersE2E(t *testing.T) {
	c := startServer(t)
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	token := strings.TrimSpace(cli("token", "create", "--name", "erp"))
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", token)
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	publish := func(lines ...string) {
		t.Helper()
		f := writeFile(t, filepath.Join(t.TempDir(), "events.jsonl"), strings.Join(lines, "\n")+"\n")
		if _, err := run(t, "publish", "--file", f, "--agent", local); err != nil {
			t.Fatal(err)
		}
	}
	publish(`{"item":{"sku":"A-1","name":"Anvil"}}`, `{"item":{"sku":"A-2","name":"Axe"}}`)
	controlplanetest.WaitFor(t, 30*time.Second, "items committed", func() bool { return c.lastSeq(t) >= 2 })
	mustContain(t, cli("apply", "-f", writeFile(t, filepath.Join(t.TempDir(), "p.yaml"), e2eOrderPartner)), "partners/shop: created")
	key := strings.TrimSpace(cli("partners", "keys", "create", "shop"))

	cfg, err := cliconfig.Load(c.config)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	call := func(method, verb, body string) (int, map[string]any) {
		t.Helper()
		u := "https://" + c.addr + "/crossdock.partner.v1.PartnerService/" + method
		var req *http.Request
		if verb == http.MethodGet {
			req, _ = http.NewRequest(verb, u+"?encoding=json&message="+url.QueryEscape(body), nil)
		} else {
			req, _ = http.NewRequest(verb, u, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %d %s", method, res.StatusCode, b)
		}
		return res.StatusCode, m
	}
	order := `{"purchaseOrderNumber":"PO-E2E","currency":"EUR","lines":[{"sku":"A-1","quantity":"2","unitPrice":"9.90"},{"sku":"A-2","quantity":"1"}]}`
	code, m := call("SubmitOrder", http.MethodPost, order)
	id := canonical.OrderID("shop", "PO-E2E")
	if code != http.StatusOK || m["orderId"] != id || m["status"] != "received" {
		t.Fatalf("SubmitOrder: %d %v, want order %s received", code, m, id)
	}
	if code, m := call("SubmitOrder", http.MethodPost, order); code != http.StatusOK || m["duplicate"] != true || m["orderId"] != id {
		t.Fatalf("SubmitOrder again: %d %v", code, m)
	}
	if code, m := call("SubmitOrder", http.MethodPost, strings.Replace(order, `"2"`, `"3"`, 1)); code != http.StatusConflict || m["code"] != "already_exists" ||
		!strings.Contains(m["message"].(string), "purchase_order_number") {
		t.Fatalf("another order under PO-E2E: %d %v", code, m)
	}
	if code, m := call("SubmitOrder", http.MethodPost, `{"purchaseOrderNumber":"PO-BAD","lines":[{"sku":"A-1","quantity":"0"}]}`); code != http.StatusBadRequest ||
		!strings.Contains(m["message"].(string), "lines[0].quantity") {
		t.Fatalf("zero quantity: %d %v", code, m)
	}
	// The ERP accepts it (published through the agent as the erp sink would).
	publish(fmt.Sprintf(`{"keys":{"order":%q},"orderAck":{"orderNumber":%q,"erpOrderNumber":"SO-9","status":"accepted"}}`, id, id))
	var got map[string]any
	controlplanetest.WaitFor(t, 30*time.Second, "order accepted", func() bool {
		_, got = call("GetOrder", http.MethodGet, fmt.Sprintf(`{"orderId":%q}`, id))
		o, _ := got["order"].(map[string]any)
		return o != nil && o["status"] == "accepted"
	})
	if o := got["order"].(map[string]any); o["erpOrderNumber"] != "SO-9" || len(o["steps"].([]any)) != 2 {
		t.Fatalf("GetOrder: %v", got)
	}
	mustContain(t, cli("orders", "ls", "--partner", "shop", "--status", "accepted"), id, "PO-E2E", "accepted", "SO-9")
	var desc string
	controlplanetest.WaitFor(t, 15*time.Second, "both status changes told", func() bool {
		desc = cli("orders", "describe", id)
		return strings.Count(desc, "notified") == 2
	})
	mustContain(t, desc, "Status:    accepted", "submitted", "committed", "erp_answer", "accepted as SO-9", "notified")
	if out, err := run(t, "orders", "describe", "ord_nope", "--config", c.config); err == nil || !strings.Contains(out+err.Error(), "no order") {
		t.Fatalf("describe of an unknown order: %v %s", err, out)
	}

	c.proc.kill()
	c.restart(t)
	controlplanetest.WaitFor(t, 30*time.Second, "order view after the restart", func() bool {
		code, got = call("GetOrder", http.MethodGet, fmt.Sprintf(`{"purchaseOrderNumber":"PO-E2E"}`))
		o, _ := got["order"].(map[string]any)
		return code == http.StatusOK && o != nil && o["status"] == "accepted"
	})
	if code, m := call("SubmitOrder", http.MethodPost, order); code != http.StatusOK || m["duplicate"] != true || m["status"] != "accepted" {
		t.Fatalf("SubmitOrder after the restart: %d %v", code, m)
	}
	n := 0
	for _, ev := range c.allEvents(t) {
		if ev.GetEvent().GetType() == "order" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("ledger holds %d order events, want 1", n)
	}
}
