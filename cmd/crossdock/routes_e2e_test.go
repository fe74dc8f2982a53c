package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	e2ePolicy = `apiVersion: crossdock.io/v1
kind: Policy
metadata:
  name: marketplace-2rps
spec:
  rateLimit: {perSecond: 2, burst: 40}
  coalesce: {enabled: true, by: [sku]}
`
	e2eDestination = `apiVersion: crossdock.io/v1
kind: Destination
metadata:
  name: marketplace
spec:
  type: webhook
  url: https://marketplace.example.com/inventory
  secret: ${env:MARKET_SECRET}
  policy: marketplace-2rps
`
	e2eRoute = `apiVersion: crossdock.io/v1
kind: Route
metadata:
  name: marketplace-inventory
spec:
  match:
    types: [inventory.level]
    keys: {sku: "ABC-*"}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": int(event.inventory_level.available)}
  destination: marketplace
`
	e2eSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not contain %q:\n%s", w, out)
		}
	}
}

// TestRoutingCLI drives apply, ls, history, rollback and routes test through the built
// binary against a real server process.
func TestRoutingCLI(t *testing.T) {
	c := startServer(t)
	t.Setenv("MARKET_SECRET", e2eSecret)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-policy.yaml"), e2ePolicy)
	writeFile(t, filepath.Join(dir, "20-destination.yml"), e2eDestination)
	routeFile := writeFile(t, filepath.Join(dir, "30-route.yaml"), e2eRoute)
	writeFile(t, filepath.Join(dir, "README.md"), "not a document")
	cli := func(args ...string) (string, error) {
		return run(t, append(args, "--config", c.config)...)
	}

	out, err := cli("apply", "-f", dir, "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out,
		"policies/marketplace-2rps: created (version 1) (dry run)",
		"destinations/marketplace: created (version 1) (dry run)",
		"routes/marketplace-inventory: created (version 1) (dry run)",
		"    +   url: https://marketplace.example.com/inventory",
		"***masked*** sha256:")
	if strings.Contains(out, e2eSecret) {
		t.Errorf("apply output shows the secret:\n%s", out)
	}
	if out, _ := cli("routes", "ls"); strings.Contains(out, "marketplace-inventory") {
		t.Fatalf("dry run stored the route:\n%s", out)
	}

	if out, err = cli("apply", "-f", dir); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "routes/marketplace-inventory: created (version 1)\n")
	out, err = cli("routes", "ls")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "NAME", "MATCH -> DESTINATIONS", "marketplace-inventory", "types=inventory.level sku=ABC-* mapping -> marketplace")
	out, err = cli("destinations", "ls")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "webhook https://marketplace.example.com/inventory policy=marketplace-2rps")
	out, err = cli("policies", "ls")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "rate=2/s burst=40 coalesce=sku")
	out, err = cli("destinations", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Documents []struct {
			Name, Version, Content string
		}
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Documents) != 1 || listed.Documents[0].Version != "1" {
		t.Fatalf("destinations ls -o json = %v:\n%s", err, out)
	}
	if strings.Contains(listed.Documents[0].Content, e2eSecret) {
		t.Error("destinations ls shows the secret")
	}

	// Same files again: unchanged. An edited mapping: updated with its diff.
	if out, err = cli("apply", "-f", dir); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "routes/marketplace-inventory: unchanged (version 1)")
	writeFile(t, routeFile, strings.Replace(e2eRoute, `"quantity":`, `"qty":`, 1))
	if out, err = cli("apply", "-f", routeFile); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "routes/marketplace-inventory: updated (version 1 -> 2)",
		`    -     {"sku": event.inventory_level.sku, "quantity":`,
		`    +     {"sku": event.inventory_level.sku, "qty":`)

	out, err = cli("history", "route", "marketplace-inventory", "--diff")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "VERSION", "1 ", "2 ", "apply", "version 2:", `+     {"sku": event.inventory_level.sku, "qty":`)

	if out, err = cli("rollback", "route", "marketplace-inventory", "--to", "1"); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "routes/marketplace-inventory: updated (version 2 -> 3)", `+     {"sku": event.inventory_level.sku, "quantity":`)
	out, err = cli("history", "route", "marketplace-inventory")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "rollback to version 1")

	// routes test: the payload, and a mapping's error exactly as a dead letter records it.
	ev := writeFile(t, filepath.Join(t.TempDir(), "level.json"), `{
  "type": "inventory.level",
  "inventoryLevel": {"sku": "ABC-9", "location": "main", "onHand": "9", "available": "7"}
}`)
	if out, err = cli("routes", "test", "marketplace-inventory", "--event", ev); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "route:        version 3", "matched:      yes", `"quantity": 7`, `"sku": "ABC-9"`)
	costly := writeFile(t, filepath.Join(t.TempDir(), "costly.yaml"), strings.Replace(e2eRoute,
		`{"sku": event.inventory_level.sku, "quantity": int(event.inventory_level.available)}`,
		`[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e)))))`, 1))
	out, err = cli("routes", "test", "marketplace-inventory", "--event", ev, "-f", costly)
	if err == nil {
		t.Fatal("routes test with a failing mapping exited 0")
	}
	mustContain(t, out, "route:        from file", "error:        route marketplace-inventory: mapping: CEL cost limit exceeded (limit 100000)")
	mustContain(t, err.Error(), "such an event would be dead-lettered")

	// A bad document: refused with the file and the field path; nothing changes.
	bad := writeFile(t, filepath.Join(t.TempDir(), "bad.yaml"), strings.Replace(e2eRoute, "[inventory.level]", "[inventory.level, inventry.level]", 1))
	_, err = cli("apply", "-f", bad)
	if err == nil {
		t.Fatal("apply of an invalid document exited 0")
	}
	mustContain(t, err.Error(), "bad.yaml:", `routes/marketplace-inventory: spec.match.types[1]: unknown event type "inventry.level"`)
	_, err = cli("apply", "-f", filepath.Join(dir, "20-destination.yml"))
	if err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("MARKET_SECRET")
	_, err = cli("apply", "-f", dir)
	if err == nil || !strings.Contains(err.Error(), "destinations/marketplace: spec.secret: environment variable MARKET_SECRET is not set") {
		t.Errorf("apply without the secret's variable: %v", err)
	}
	_, err = cli("delete", "destination", "marketplace")
	if err == nil || !strings.Contains(err.Error(), "destinations/marketplace is still in use") {
		t.Errorf("delete of a destination in use: %v", err)
	}
	if out, err = cli("delete", "route", "marketplace-inventory"); err != nil {
		t.Fatal(err)
	}
	mustContain(t, out, "routes/marketplace-inventory: deleted (version 3; history kept)", "    - kind: Route")
	if out, _ := cli("routes", "ls"); strings.Contains(out, "marketplace-inventory") {
		t.Errorf("deleted route still listed:\n%s", out)
	}
	_, err = cli("rollback", "route", "marketplace-inventory", "--to", "7")
	if err == nil || !strings.Contains(err.Error(), "has no version 7") {
		t.Errorf("rollback to a missing version: %v", err)
	}
}
