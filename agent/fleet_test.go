package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/routing"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// examplePlugin builds plugins/example for a test: a real plugin process.
func examplePlugin(t *testing.T) (path, sum string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "example")
	if out, err := exec.Command("go", "build", "-o", path, "github.com/crossdock/crossdock/plugins/example").CombinedOutput(); err != nil {
		t.Fatalf("build plugins/example: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return path, hex.EncodeToString(s[:])
}

func connectorState(a *agent.Agent, name string) *agentv1.ConnectorStatus {
	for _, c := range a.Status().GetConnectors() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// TestCentralConfigOffline: an agent enrolled with labels gets the AgentConfig that
// selects them, applies it, and keeps it in its data dir with the secret references
// unresolved; restarted while the control plane is down, it runs that configuration.
func TestCentralConfigOffline(t *testing.T) {
	bin, sum := examplePlugin(t)
	t.Setenv("FLEET_TEST_LOCATION", "resolved-on-the-agent")
	srv := controlplanetest.TestServer(t, nil)
	dir := t.TempDir()
	a, err := newAgent(t, srv, dir, srv.Token(t, time.Minute, "store-1"), func(c *agent.Config) {
		c.Labels = map[string]string{"site": "east"}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	if l, err := srv.Store().Ledger().LabelsOf("store-1"); err != nil || l["site"] != "east" {
		t.Fatalf("labels given at enrollment: %v, %v", l, err)
	}
	doc, err := routing.ParseOne([]byte(`apiVersion: crossdock.io/v1
kind: AgentConfig
metadata: {name: east}
spec:
  selector: {labels: {site: east}}
  connectors:
    - name: counter
      path: ` + bin + `
      sha256: ` + sum + `
      settings: {sku: SKU-1, location: "${env:FLEET_TEST_LOCATION}", batch: 5, interval: 20ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	content, err := doc.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Store().Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT, &storev1.PutDocuments{
		Documents: []*storev1.DocumentContent{{Kind: string(routing.KindAgentConfig), Name: "east", Content: content}},
	}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "the agent to apply version 1 and capture", func() bool {
		r := a.ConfigReport()
		return r.GetState() == agent.ConfigApplied && r.GetRunningVersion() == 1 && connectorState(a, "counter").GetEventsCaptured() > 0
	})
	saved, err := os.ReadFile(filepath.Join(dir, "central-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), "${env:FLEET_TEST_LOCATION}") || strings.Contains(string(saved), "resolved-on-the-agent") {
		t.Fatalf("the saved configuration must keep the reference, not its value:\n%s", saved)
	}
	cancel()
	<-done
	srv.Stop()

	// The control plane is down: the agent starts with the saved configuration.
	b, err := newAgent(t, srv, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	before := connectorState(b, "counter")
	if before == nil {
		t.Fatal("the restarted agent does not run the saved central configuration")
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- b.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	controlplanetest.WaitFor(t, 30*time.Second, "the saved configuration to capture offline", func() bool {
		c := connectorState(b, "counter")
		return c.GetState() == "running" && c.GetEventsCaptured() > 0
	})
	if r := b.ConfigReport(); r.GetRunningName() != "east" || r.GetRunningVersion() != 1 {
		t.Fatalf("report after an offline restart: %v", r)
	}
}
