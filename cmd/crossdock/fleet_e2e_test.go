package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
)

// fleetConfigDoc is the AgentConfig of the fleet test: two counters, "keep" and
// "change"; changeSettings is the second one's settings.
func fleetConfigDoc(changeSettings string) string {
	return `apiVersion: crossdock.io/v1
kind: AgentConfig
metadata:
  name: east
spec:
  selector:
    labels: {site: east}
  connectors:
    - name: keep
      builtin: example
      settings: {sku: SKU-K, batch: 5, interval: 50ms}
    - name: change
      builtin: example
      settings: ` + changeSettings + `
`
}

func applyDoc(t *testing.T, c *cluster, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agentconfig.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "apply", "--config", c.config, "-f", p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fleetLs(t *testing.T, c *cluster, args ...string) []*adminv1.FleetAgent {
	t.Helper()
	out, err := run(t, append([]string{"agents", "ls", "--config", c.config, "-o", "json"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var res adminv1.ListFleetResponse
	if err := protojson.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("agents ls -o json: %v\n%s", err, out)
	}
	return res.GetAgents()
}

type fleetAgentProc struct {
	name, local string
}

func (a fleetAgentProc) connector(t *testing.T, name string) *agentv1.ConnectorStatus {
	st, err := agentStatus(a.local)
	if err != nil {
		return nil
	}
	return connectorStatus(st, name)
}

// TestFleetConfigReachesAgents runs a control plane and three agents (processes of the
// built binary, enrolled with --label site=east, without connectors of their own). An
// AgentConfig applied centrally reaches all three; a change of one connector restarts
// only that connector on each agent, which reports the new version; a configuration the
// connector refuses is refused by every agent with the field named, in `agents ls`,
// while the old one keeps capturing; a rollback makes the good version current again.
func TestFleetConfigReachesAgents(t *testing.T) {
	c := startServer(t)
	var agents []fleetAgentProc
	for i := range 3 {
		name := fmt.Sprintf("east-%d", i+1)
		tok, err := run(t, "token", "create", "--config", c.config, "--name", name)
		if err != nil {
			t.Fatal(err)
		}
		local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		start(t, name, "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--enroll-token", strings.TrimSpace(tok),
			"--local-addr", local, "--label", "site=east", "--label", fmt.Sprintf("slot=%d", i+1))
		agents = append(agents, fleetAgentProc{name: name, local: local})
	}
	// A fourth agent of the site runs its own config file's connector: the local file
	// wins over the central configuration.
	tok, err := run(t, "token", "create", "--config", c.config, "--name", "local-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEET_LOCAL_TOKEN", strings.TrimSpace(tok))
	localAgent := fleetAgentProc{name: "local-1", local: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	localCfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(localCfg, []byte(fmt.Sprintf(`agent:
  data_dir: %s
  servers: [%q]
  local_addr: %q
  enroll_token: ${env:FLEET_LOCAL_TOKEN}
connectors:
  - name: own
    builtin: example
    settings: {sku: SKU-L, batch: 5, interval: 50ms}
`, t.TempDir(), c.addr, localAgent.local)), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "local-1", "agent", "--config", localCfg, "--label", "site=east")
	controlplanetest.WaitFor(t, 60*time.Second, "four agents connected", func() bool {
		n := 0
		for _, fa := range fleetLs(t, c, "--selector", "site=east") {
			if fa.GetAgent().GetConnected() {
				n++
			}
		}
		return n == 4
	})
	if got := fleetLs(t, c, "--selector", "site=east,slot=2"); len(got) != 1 || got[0].GetAgent().GetId() != "east-2" {
		t.Fatalf("--selector site=east,slot=2 listed %v, want east-2 only", got)
	}
	if got := fleetLs(t, c, "--selector", "site=west"); len(got) != 0 {
		t.Fatalf("--selector site=west listed %d agents", len(got))
	}

	// waitAll waits until every agent reports state for version v of "east".
	waitAll := func(what string, v uint64, state string, extra func(fa *adminv1.FleetAgent) bool) []*adminv1.FleetAgent {
		t.Helper()
		var fas []*adminv1.FleetAgent
		controlplanetest.WaitFor(t, 60*time.Second, what, func() bool {
			fas = slices.DeleteFunc(fleetLs(t, c, "--selector", "site=east"), func(fa *adminv1.FleetAgent) bool { return fa.GetAgent().GetId() == "local-1" })
			for _, fa := range fas {
				if fa.GetConfigName() != "east" || fa.GetConfigVersion() != v || fa.GetConfigState() != state || (extra != nil && !extra(fa)) {
					return false
				}
			}
			return len(fas) == 3
		})
		return fas
	}

	applyDoc(t, c, fleetConfigDoc("{sku: SKU-C, batch: 5, interval: 50ms}"))
	waitAll("every agent to apply version 1", 1, "applied", nil)
	controlplanetest.WaitFor(t, 30*time.Second, "the agent with a local file to report local", func() bool {
		for _, fa := range fleetLs(t, c, "--selector", "site=east") {
			if fa.GetAgent().GetId() == "local-1" {
				return fa.GetConfigName() == "east" && fa.GetConfigState() == "local" && fa.GetRunningName() == ""
			}
		}
		return false
	})
	controlplanetest.WaitFor(t, 30*time.Second, "the agent with a local file to run its own connector", func() bool {
		return localAgent.connector(t, "own").GetState() == "running"
	})
	if k := localAgent.connector(t, "keep"); k != nil {
		t.Errorf("the agent with a local file runs a central connector: %v", k)
	}
	pids := map[string]map[string]int32{}
	for _, a := range agents {
		controlplanetest.WaitFor(t, 30*time.Second, a.name+"'s connectors to capture", func() bool {
			k, ch := a.connector(t, "keep"), a.connector(t, "change")
			return k.GetState() == "running" && ch.GetState() == "running" && k.GetEventsCaptured() > 0 && ch.GetEventsCaptured() > 0
		})
		pids[a.name] = map[string]int32{"keep": a.connector(t, "keep").GetPid(), "change": a.connector(t, "change").GetPid()}
	}

	// Version 2 changes "change" only.
	applyDoc(t, c, fleetConfigDoc("{sku: SKU-C, batch: 5, interval: 20ms}"))
	fas := waitAll("every agent to apply version 2", 2, "applied", func(fa *adminv1.FleetAgent) bool { return fa.GetRunningVersion() == 2 })
	for _, fa := range fas {
		if !slices.Equal(fa.GetRestarted(), []string{"change"}) {
			t.Errorf("%s restarted %v, want [change]", fa.GetAgent().GetId(), fa.GetRestarted())
		}
		if fa.GetVersion() == "" || fa.GetLastContact() == nil || fa.GetAgent().GetCertNotAfter() == nil {
			t.Errorf("%s: version %q, last contact %v, cert expiry %v: want all set", fa.GetAgent().GetId(), fa.GetVersion(), fa.GetLastContact(), fa.GetAgent().GetCertNotAfter())
		}
	}
	for _, a := range agents {
		controlplanetest.WaitFor(t, 30*time.Second, a.name+"'s changed connector to run again", func() bool {
			ch := a.connector(t, "change")
			return ch.GetState() == "running" && ch.GetPid() != pids[a.name]["change"]
		})
		if k := a.connector(t, "keep"); k.GetPid() != pids[a.name]["keep"] || k.GetRestarts() != 0 {
			t.Errorf("%s: the unchanged connector was restarted (pid %d, was %d)", a.name, k.GetPid(), pids[a.name]["keep"])
		}
		pids[a.name]["change"] = a.connector(t, "change").GetPid()
	}

	// Version 3: the connector refuses batch 20000. Every agent refuses it with the field
	// and keeps running version 2, capturing.
	applyDoc(t, c, fleetConfigDoc("{sku: SKU-C, batch: 20000, interval: 20ms}"))
	fas = waitAll("every agent to refuse version 3", 3, "failed", nil)
	for _, fa := range fas {
		if fa.GetRunningVersion() != 2 || !strings.Contains(fa.GetConfigError(), "connectors[1].settings.batch: must be between 1 and 10000") {
			t.Errorf("%s: runs version %d, error %q: want version 2 and the field named", fa.GetAgent().GetId(), fa.GetRunningVersion(), fa.GetConfigError())
		}
	}
	table, err := run(t, "agents", "ls", "--config", c.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "failed") || !strings.Contains(table, "east@3 (runs east@2)") || !strings.Contains(table, "east-1: configuration failed: agentconfigs/east version 3: connectors[1].settings.batch") {
		t.Errorf("agents ls does not show the refused configuration:\n%s", table)
	}
	for _, a := range agents {
		before := a.connector(t, "change").GetEventsCaptured()
		controlplanetest.WaitFor(t, 30*time.Second, a.name+"'s old configuration to keep capturing", func() bool {
			ch := a.connector(t, "change")
			return ch.GetPid() == pids[a.name]["change"] && ch.GetEventsCaptured() > before
		})
	}

	// Rollback to version 2 (as version 4): applied, nothing restarted (same content).
	if _, err := run(t, "rollback", "agentconfig", "east", "--to", "2", "--config", c.config); err != nil {
		t.Fatal(err)
	}
	fas = waitAll("every agent to apply the rollback", 4, "applied", func(fa *adminv1.FleetAgent) bool { return fa.GetRunningVersion() == 4 })
	for _, fa := range fas {
		if len(fa.GetRestarted()) != 0 {
			t.Errorf("%s: the rollback to the running content restarted %v", fa.GetAgent().GetId(), fa.GetRestarted())
		}
	}
	for _, a := range agents {
		if ch := a.connector(t, "change"); ch.GetPid() != pids[a.name]["change"] {
			t.Errorf("%s: the rollback restarted the connector", a.name)
		}
	}
	hist, err := run(t, "history", "agentconfig", "east", "--config", c.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hist, "rollback to version 2") {
		t.Errorf("history does not show the rollback:\n%s", hist)
	}
}
