package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
)

// TestDeliveryCLI drives delivery through the built binaries: documents applied with
// `crossdock apply`, events published through an agent, a sample marketplace that
// refuses one message; then `destinations status`, `dlq ls/show/retry` and `replay`.
func TestDeliveryCLI(t *testing.T) {
	c := startServer(t, "--webhook-allow", "127.0.0.1/32") // the marketplace is an httptest server
	m, err := samplemarket.New(samplemarket.Config{Secret: e2eSecret, Reject: func(msg samplemarket.Message) (int, string) {
		if msg.SKU == "REFUSED" {
			return http.StatusUnprocessableEntity, "unknown sku REFUSED"
		}
		return 0, ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(m)
	t.Cleanup(ms.Close)
	dir := t.TempDir()
	docs := writeFile(t, filepath.Join(dir, "shop.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available,
     "per_unit": string(100 / int(event.inventory_level.on_hand))}
`, ms.URL, e2eSecret))
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli("apply", "-f", docs)

	token := strings.TrimSpace(cli("token", "create", "--name", "erp-shop"))
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", token)
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	var lines []string
	for i, l := range []struct{ sku, onHand, avail string }{
		{"A", "10", "10"}, {"REFUSED", "5", "5"}, {"B", "0", "0"}, {"A", "12", "11"}, {"C", "4", "4"},
	} {
		lines = append(lines, fmt.Sprintf(`{"keys":{"sku":%q},"occurredAt":"2026-11-27T08:00:0%dZ","inventoryLevel":{"sku":%q,"location":"WH1","onHand":%q,"available":%q}}`, l.sku, i, l.sku, l.onHand, l.avail))
	}
	file := writeFile(t, filepath.Join(dir, "events.jsonl"), strings.Join(lines, "\n")+"\n")
	if _, err := run(t, "publish", "--file", file, "--agent", local); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "delivery to catch up", func() bool {
		out, err := run(t, "destinations", "status", "-o", "json", "--config", c.config)
		if err != nil {
			return false
		}
		var st struct {
			LastSeq      string `json:"lastSeq"`
			Destinations []struct {
				Destination, Cursor, Lag string
			} `json:"destinations"`
		}
		return json.Unmarshal([]byte(out), &st) == nil && st.LastSeq == "5" && len(st.Destinations) == 1 && st.Destinations[0].Lag == ""
	})
	if q := m.Quantities(); q["A"] != "11" || q["C"] != "4" || len(q) != 2 {
		t.Fatalf("marketplace quantities %v, want A=11 C=4", q)
	}
	out := cli("destinations", "status")
	mustContain(t, out, "shop", "webhook", "closed")

	out = cli("dlq", "ls")
	mustContain(t, out, "shop-stock", "sku=REFUSED", "HTTP 422", "sku=B", "division by zero")
	out = cli("dlq", "ls", "--error", "422")
	ids := regexp.MustCompile(`dl_[0-9a-f]+`).FindAllString(out, -1)
	if len(ids) != 1 {
		t.Fatalf("dlq ls --error 422 listed %v:\n%s", ids, out)
	}
	out = cli("dlq", "show", ids[0])
	mustContain(t, out, "Payload:", `"sku": "REFUSED"`, "Attempts (1):", "422", "unknown sku REFUSED")
	if out := cli("dlq", "ls", "--key", "sku=B"); !strings.Contains(out, "division by zero") || strings.Contains(out, "REFUSED") {
		t.Fatalf("dlq ls --key sku=B:\n%s", out)
	}

	// Retry both: the marketplace refuses again, and B's mapping still divides by zero.
	mustContain(t, cli("dlq", "retry", "--all", "--destination", "shop"), "2 dead letter(s) queued for retry")
	controlplanetest.WaitFor(t, 30*time.Second, "retries to fail again", func() bool {
		out, err := run(t, "dlq", "show", ids[0], "--config", c.config)
		return err == nil && strings.Contains(out, "Attempts (2):") && strings.Contains(out, "State:        open")
	})
	if _, err := run(t, "dlq", "retry", "--config", c.config); err == nil {
		t.Fatal("dlq retry without an id or --all succeeded")
	}

	before := len(m.Requests())
	out = cli("replay", "--route", "shop-stock", "--from", "1", "--key", "sku=A")
	mustContain(t, out, "done: 2 sent, 0 dead-lettered")
	controlplanetest.WaitFor(t, 10*time.Second, "replayed requests recorded", func() bool { return len(m.Requests()) == before+2 })
	for _, r := range m.Requests()[before:] {
		if r.Status != http.StatusOK || r.Messages[0].SKU != "A" {
			t.Fatalf("replayed request %s: status %d, sku %s", r.ID, r.Status, r.Messages[0].SKU)
		}
	}
	// From a time: every event was committed within the last ten minutes.
	mustContain(t, cli("replay", "--route", "shop-stock", "--from", "10m", "--key", "sku=C"), "done: 1 sent, 0 dead-lettered")
	if _, err := run(t, "replay", "--route", "nope", "--from", "1", "--config", c.config); err == nil || !strings.Contains(err.Error(), `no route "nope"`) {
		t.Fatalf("replay of an unknown route: %v", err)
	}
	_ = os.Remove(file)
}
