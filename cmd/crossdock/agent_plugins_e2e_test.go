package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
)

func connectorStatus(st *agentv1.AgentStatus, name string) *agentv1.ConnectorStatus {
	for _, c := range st.GetConnectors() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

// TestAgentConnectorPluginEndToEnd runs the control plane and an agent as processes of
// the built binary; the agent runs the built-in example connector as a `crossdock plugin`
// subprocess from its config file. The test SIGKILLs the plugin mid-stream: the agent
// stays up, restarts it, and the ledger ends with every event exactly once, in order.
func TestAgentConnectorPluginEndToEnd(t *testing.T) {
	const total = 3000
	c := startServer(t)
	token, err := run(t, "token", "create", "--config", c.config, "--name", "erp-east")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("E2E_ENROLL_TOKEN", strings.TrimSpace(token))
	agentDir := t.TempDir()
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	writeConfig := func(settings string) string {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		doc := fmt.Sprintf(`agent:
  data_dir: %s
  servers: [%q]
  local_addr: %q
  enroll_token: ${env:E2E_ENROLL_TOKEN}
connectors:
  - name: counter
    builtin: example
    settings: %s
`, agentDir, c.addr, local, settings)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := writeConfig(fmt.Sprintf(`{sku: SKU-1, count: %d, batch: 50, interval: 10ms}`, total))
	ag := start(t, "agent", "agent", "--config", cfg)

	var st *agentv1.AgentStatus
	controlplanetest.WaitFor(t, 60*time.Second, "the connector to capture events", func() bool {
		st, err = agentStatus(local)
		cs := connectorStatus(st, "counter")
		return err == nil && cs.GetState() == "running" && cs.GetEventsCaptured() >= 600
	})
	pid := connectorStatus(st, "counter").GetPid()
	if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
		t.Fatalf("kill plugin %d: %v", pid, err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "the agent to restart the plugin", func() bool {
		st, err = agentStatus(local)
		cs := connectorStatus(st, "counter")
		return err == nil && cs.GetRestarts() >= 1 && cs.GetState() == "running" && cs.GetPid() != pid
	})
	if p := connectorStatus(st, "counter").GetPosition(); p == strconv.Itoa(total) {
		t.Fatal("the stream ended before the plugin was killed; slow it down")
	}
	controlplanetest.WaitFor(t, 120*time.Second, "every event committed", func() bool { return c.lastSeq(t) >= total })
	evs := c.allEvents(t)
	if len(evs) != total {
		t.Fatalf("ledger holds %d events, want %d", len(evs), total)
	}
	for i, ce := range evs {
		n := strconv.Itoa(i + 1)
		if ev := ce.GetEvent(); ev.GetId() != canonical.ID("erp-east", "counter", n) || ev.GetInventoryLevel().GetOnHand() != n {
			t.Fatalf("ledger seq %d: event %s on hand %s, want counter event %s", ce.GetSeq(), ev.GetId(), ev.GetInventoryLevel().GetOnHand(), n)
		}
	}
	select {
	case <-ag.done:
		t.Fatalf("the agent exited when its plugin was killed: %v", ag.err)
	default:
	}

	// The control plane shows the connectors as the agent reported them.
	var desc adminv1.DescribeAgentResponse
	controlplanetest.WaitFor(t, 60*time.Second, "the connector report at the control plane", func() bool {
		out, err := run(t, "agents", "describe", "erp-east", "--config", c.config, "-o", "json")
		if err != nil || protojson.Unmarshal([]byte(out), &desc) != nil || len(desc.GetConnectors()) != 1 {
			return false
		}
		cs := desc.GetConnectors()[0]
		return cs.GetName() == "counter" && cs.GetState() == "running" && cs.GetRestarts() >= 1 && cs.GetPlugin() == "builtin:example"
	})
	if !desc.GetAgent().GetConnected() || desc.GetAgent().GetEventsCommitted() != total {
		t.Errorf("described agent %v", desc.GetAgent())
	}
	out, err := run(t, "agents", "describe", "erp-east", "--config", c.config)
	if err != nil || !strings.Contains(out, "counter") || !strings.Contains(out, "builtin:example") || !strings.Contains(out, "running") {
		t.Errorf("agents describe table: %v\n%s", err, out)
	}
	if _, err := run(t, "agents", "describe", "nobody", "--config", c.config); err == nil || !strings.Contains(err.Error(), `no agent "nobody"`) {
		t.Errorf("describe of an unknown agent: %v", err)
	}
	out, err = run(t, "agent", "status", "--agent", local)
	if err != nil || !strings.Contains(out, "connectors:") || !strings.Contains(out, "counter") {
		t.Errorf("agent status: %v\n%s", err, out)
	}

	// A SIGKILLed agent leaves no plugin behind (it would hold the source's slot or lock).
	plugin := connectorStatus(st, "counter").GetPid()
	ag.kill()
	controlplanetest.WaitFor(t, 10*time.Second, "the plugin to die with the agent", func() bool { return processGone(int(plugin)) })

	// Restarted with settings the plugin rejects, the agent refuses to start and names
	// the field.
	_, err = run(t, "agent", "--config", writeConfig(`{sku: SKU-1, batch: -1}`))
	if err == nil || !strings.Contains(err.Error(), "connectors[0].settings.batch: must be between 1 and 10000") {
		t.Errorf("agent with bad connector settings: %v", err)
	}
}

// TestAgentConfigRefusedAtStart: a config file error stops the agent before anything
// starts, with the field path and the reason.
func TestAgentConfigRefusedAtStart(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"connectors:\n  - name: erp\n    builtin: sql\n    settings: {dsn: '${env:CROSSDOCK_E2E_UNSET}'}\n", "connectors[0].settings.dsn: environment variable CROSSDOCK_E2E_UNSET is not set"},
		{"connectors:\n  - name: erp\n    builtin: nosuch\n", `connectors[0].builtin: no built-in connector "nosuch"`},
		{"connectors:\n  - name: erp\n    path: /opt/x\n", "connectors[0].sha256: required with path"},
		{"agent: {quota: big}\n", `agent.quota: "big" is not a size`},
	} {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "agent", "--config", p, "--data-dir", t.TempDir(), "--server", "127.0.0.1:1")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent --config with %q: %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// processGone reports whether pid has exited (a zombie counts: nobody may have reaped it).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

func TestPluginLs(t *testing.T) {
	out, err := run(t, "plugin", "ls")
	if err != nil || !strings.Contains(out, "example  1.0.0    true    true") {
		t.Errorf("plugin ls: %v\n%s", err, out)
	}
	if _, err := run(t, "plugin", "nosuch"); err == nil || !strings.Contains(err.Error(), `no built-in connector "nosuch"`) {
		t.Errorf("plugin nosuch: %v", err)
	}
}
