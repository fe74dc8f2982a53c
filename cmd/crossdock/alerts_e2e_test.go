package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
)

const e2eAlerts = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: standard}
spec: {requestsPerSecond: 20}
---
apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: relaxed}
spec: {requestsPerSecond: 5}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: standard, scopes: [availability:read], skus: ["A-*"]}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: slowco}
spec: {tier: relaxed, scopes: [availability:read], skus: ["B-*"]}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: stock-stale}
spec:
  condition: inventoryStale
  threshold: {staleFor: 1s}
  tiers:
    relaxed: {staleFor: 24h}
`

// TestAlertsCLI applies an Alert with a per-tier threshold through the built binary
// against a real server process and reads the instances with alerts ls and history:
// no inventory at all is stale for the standard tier's partner (1s), not yet for the
// relaxed tier's (24h). The Alert document has history and rollback like every kind.
func TestAlertsCLI(t *testing.T) {
	c := startServer(t, "--alert-interval", "200ms")
	cli := func(args ...string) string {
		t.Helper()
		out, err := run(t, append(args, "--config", c.config)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	f := writeFile(t, filepath.Join(t.TempDir(), "alerts.yaml"), e2eAlerts)
	mustContain(t, cli("apply", "-f", f), "alerts/stock-stale: created (version 1)")
	var out string
	controlplanetest.WaitFor(t, 30*time.Second, "alerts ls to show stock-stale firing for acme", func() bool {
		out = cli("alerts", "ls", "--state", "firing")
		return strings.Contains(out, "partner=acme,tier=standard")
	})
	mustContain(t, out, "ALERT", "stock-stale", "firing", "warning", "inventoryStale", "no inventory update the partner sees")
	if strings.Contains(out, "slowco") {
		t.Errorf("the relaxed tier's 24h threshold is not reached, yet slowco is firing:\n%s", out)
	}
	mustContain(t, cli("alerts", "history", "stock-stale"), "stock-stale", "firing", "partner=acme")
	// protojson varies its spacing on purpose: compare without it.
	mustContain(t, strings.Join(strings.Fields(cli("alerts", "ls", "-o", "json")), ""), `"condition":"inventoryStale"`)

	// Documents of kind Alert have versions, history and rollback.
	writeFile(t, f, strings.Replace(e2eAlerts, "staleFor: 1s", "staleFor: 2s", 1))
	mustContain(t, cli("apply", "-f", f), "alerts/stock-stale: updated (version 1 -> 2)")
	mustContain(t, cli("history", "alert", "stock-stale"), "1", "2")
	mustContain(t, cli("rollback", "alert", "stock-stale", "--to", "1"), "alerts/stock-stale")
}
