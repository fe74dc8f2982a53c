package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
)

// TestInventoryGetCLI publishes levels and prices through an agent (all processes of
// the built binary) and reads them back with `inventory get` and `prices get`: the
// newest level per (sku, location), an earlier-occurring level not overwriting, the
// price valid now, table and JSON.
func TestInventoryGetCLI(t *testing.T) {
	c := startServer(t)
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	token := strings.TrimSpace(cli("token", "create", "--name", "erp-stock"))
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", token)
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	now := time.Now().UTC()
	lines := []string{
		`{"occurredAt":"2026-11-27T08:00:00Z","inventoryLevel":{"sku":"A-100","location":"WH1","onHand":"10","allocated":"2","available":"8","unitOfMeasure":"EA"}}`,
		`{"occurredAt":"2026-11-27T08:00:00Z","inventoryLevel":{"sku":"A-100","location":"WH2","onHand":"3","available":"3"}}`,
		`{"occurredAt":"2026-11-27T09:00:00Z","inventoryLevel":{"sku":"A-100","location":"WH1","onHand":"12","allocated":"2","available":"10","unitOfMeasure":"EA"}}`,
		// Occurred before the one above (a late re-send): committed, not shown.
		`{"occurredAt":"2026-11-27T07:00:00Z","inventoryLevel":{"sku":"A-100","location":"WH1","onHand":"1","available":"1"}}`,
		`{"occurredAt":"2026-11-27T08:00:00Z","inventoryLevel":{"sku":"B-200","location":"WH1","onHand":"0","available":"0"}}`,
		fmt.Sprintf(`{"price":{"sku":"A-100","priceList":"retail","currency":"EUR","amount":"9.99","validFrom":%q}}`, now.Add(-time.Hour).Format(time.RFC3339)),
		fmt.Sprintf(`{"price":{"sku":"A-100","priceList":"retail","currency":"EUR","amount":"7.50","validFrom":%q}}`, now.Add(time.Hour).Format(time.RFC3339)),
	}
	file := writeFile(t, filepath.Join(t.TempDir(), "events.jsonl"), strings.Join(lines, "\n")+"\n")
	if _, err := run(t, "publish", "--file", file, "--agent", local); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "7 events committed", func() bool { return c.lastSeq(t) == 7 })

	out := cli("inventory", "get", "--sku", "A-100", "--sku", "B-200", "--min-seq", "7")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 4 {
		t.Fatalf("inventory get: %d lines, want a header and 3 rows:\n%s", len(rows), out)
	}
	for i, want := range [][]string{
		{"SKU", "LOCATION", "ON", "HAND", "ALLOCATED", "AVAILABLE", "SEQ", "AS", "OF"},
		{"A-100", "WH1", "12", "2", "10", "3"},
		{"A-100", "WH2", "3", "-", "3", "2"},
		{"B-200", "WH1", "0", "-", "0", "5"},
	} {
		f := strings.Fields(rows[i])
		if len(f) < len(want) || strings.Join(f[:len(want)], " ") != strings.Join(want, " ") {
			t.Fatalf("inventory get row %d = %q, want it to start with %q\n%s", i, rows[i], want, out)
		}
	}

	out = cli("inventory", "get", "--sku", "A-100", "--location", "WH2", "-o", "json")
	var res struct {
		Levels []struct {
			Sku, Location, OnHand, Available, Seq, CommittedAt string
		}
		ViewsSeq string
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("inventory get -o json: %v\n%s", err, out)
	}
	if len(res.Levels) != 1 || res.Levels[0].Location != "WH2" || res.Levels[0].OnHand != "3" || res.Levels[0].Seq != "2" || res.Levels[0].CommittedAt == "" || res.ViewsSeq != "7" {
		t.Fatalf("inventory get -o json = %+v\n%s", res, out)
	}

	out = cli("prices", "get", "--sku", "A-100", "--price-list", "retail")
	if !strings.Contains(out, "9.99") || strings.Contains(out, "7.50") {
		t.Fatalf("prices get shows the price valid now (9.99), not the future one:\n%s", out)
	}

	if _, err := run(t, "inventory", "get", "--config", c.config); err == nil || !strings.Contains(err.Error(), "--sku") {
		t.Fatalf("inventory get without --sku: %v", err)
	}
}
