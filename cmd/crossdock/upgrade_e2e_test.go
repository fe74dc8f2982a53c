//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// goBuild builds pkg (relative to this directory) into out with -ldflags.
func goBuild(t *testing.T, out, pkg, ldflags string) {
	t.Helper()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Errorf("build %s: %v\n%s", out, err, b)
	}
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// publisher publishes one event at a time to an agent's local API, each with its own
// source position, until stopped; a call that fails (the agent is restarting for its
// upgrade) is made again with the same event, so nothing acknowledged or not is skipped.
type publisher struct {
	local, prefix string
	mu            sync.Mutex
	published     []string // positions acknowledged by the agent
	failures      int
}

func (p *publisher) run(ctx context.Context) {
	client := localClient(p.local)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for i := 1; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pos := fmt.Sprintf("%s-%06d", p.prefix, i)
		ev := &eventv1.Event{Source: &eventv1.Source{Position: pos}, OccurredAt: timestamppb.New(time.Unix(1_700_000_000+int64(i), 0)),
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "SKU-UP", Location: p.prefix, OnHand: fmt.Sprint(i)}}}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.Publish(cctx, connect.NewRequest(&agentv1.PublishRequest{Events: []*eventv1.Event{ev}}))
		cancel()
		p.mu.Lock()
		if err != nil {
			p.failures++
		} else {
			p.published = append(p.published, pos)
			i++
		}
		p.mu.Unlock()
	}
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.published)
}

// TestAgentUpgradeAndRollback upgrades two agents, each run from its own copy of the
// binary (build A, "dev"), to build B while both publish events without pause, one at
// a time, through their local API: `agents upgrade --to B --max-parallel 1` ends with
// both on B, one after the other. Then two deliberately broken builds are rolled out:
// one exits at start, one hangs without connecting; each time the agent puts B back by
// itself, the rollout fails with the agent's reason and stops at that agent. At the end
// every event published is in the ledger exactly once.
func TestAgentUpgradeAndRollback(t *testing.T) {
	bins := t.TempDir()
	binB, binExit, binHang := filepath.Join(bins, "crossdock-B"), filepath.Join(bins, "broken-exit"), filepath.Join(bins, "broken-hang")
	var wg sync.WaitGroup
	for _, b := range []struct{ out, pkg, ldflags string }{
		{binB, ".", "-X main.version=e2e-B"},
		{binExit, "../../internal/testkit/brokenagent", "-X main.version=e2e-C-exit -X main.mode=exit"},
		{binHang, "../../internal/testkit/brokenagent", "-X main.version=e2e-C-hang -X main.mode=hang"},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); goBuild(t, b.out, b.pkg, b.ldflags) }()
	}
	c := startServer(t)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for v, bin := range map[string]string{"e2e-B": binB, "e2e-C-exit": binExit, "e2e-C-hang": binHang} {
		out, err := run(t, "releases", "push", bin, "--version", v, "--config", c.config)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(strings.TrimSpace(out))
	}

	type agentProc struct {
		name, exe, local string
		pub              *publisher
	}
	var agents []*agentProc
	ctx, stopPublishing := context.WithCancel(context.Background())
	defer stopPublishing()
	var pubs sync.WaitGroup
	for i := range 2 {
		a := &agentProc{name: fmt.Sprintf("up-%d", i+1), exe: filepath.Join(t.TempDir(), "crossdock"), local: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
		copyExecutable(t, binary, a.exe)
		tok, err := run(t, "token", "create", "--config", c.config, "--name", a.name)
		if err != nil {
			t.Fatal(err)
		}
		startBin(t, a.name, a.exe, "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--enroll-token", strings.TrimSpace(tok),
			"--local-addr", a.local, "--label", "site=east")
		a.pub = &publisher{local: a.local, prefix: a.name}
		agents = append(agents, a)
	}
	versions := func() map[string]string {
		out := map[string]string{}
		for _, fa := range fleetLs(t, c, "--selector", "site=east") {
			if fa.GetAgent().GetConnected() {
				out[fa.GetAgent().GetId()] = fa.GetVersion()
			}
		}
		return out
	}
	waitVersions := func(what, want string) {
		t.Helper()
		controlplanetest.WaitFor(t, 60*time.Second, what, func() bool {
			v := versions()
			return len(v) == 2 && v["up-1"] == want && v["up-2"] == want
		})
	}
	waitVersions("both agents connected on build A", "dev")
	for _, a := range agents {
		pubs.Add(1)
		go func() { defer pubs.Done(); a.pub.run(ctx) }()
	}
	controlplanetest.WaitFor(t, 30*time.Second, "events flowing from both agents", func() bool {
		return agents[0].pub.count() > 10 && agents[1].pub.count() > 10
	})

	status := func() *adminv1.GetUpgradeResponse {
		t.Helper()
		out, err := run(t, "agents", "upgrade", "status", "--config", c.config, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var res adminv1.GetUpgradeResponse
		if err := protojson.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("agents upgrade status -o json: %v\n%s", err, out)
		}
		return &res
	}

	// A → B, one agent at a time, events flowing.
	if out, err := run(t, "agents", "upgrade", "--config", c.config, "--to", "e2e-B", "--selector", "site=east", "--max-parallel", "1", "--deadline", "30s", "--wait"); err != nil {
		t.Fatalf("upgrade to B: %v\n%s", err, out)
	}
	waitVersions("both agents connected on build B", "e2e-B")
	r := status().GetRollout()
	if r.GetState() != "done" || len(r.GetAgents()) != 2 {
		t.Fatalf("rollout to B: %v", r)
	}
	first, second := r.GetAgents()[0], r.GetAgents()[1]
	if first.GetState() != "done" || second.GetState() != "done" || first.GetFromVersion() != "dev" {
		t.Fatalf("rollout to B agents: %v", r.GetAgents())
	}
	if second.GetStartedAt().AsTime().Before(first.GetFinishedAt().AsTime()) {
		t.Errorf("--max-parallel 1: %s started at %s, before %s finished at %s", second.GetAgentId(), second.GetStartedAt().AsTime(), first.GetAgentId(), first.GetFinishedAt().AsTime())
	}
	for _, a := range agents {
		out, err := exec.Command(a.exe, "version", "-o", "json").Output()
		if err != nil || !strings.Contains(string(out), `"version":"e2e-B"`) {
			t.Errorf("%s's executable after the upgrade: %s %v", a.name, out, err)
		}
	}

	// B → broken builds: the first agent rolls back by itself; the rollout stops there.
	for _, tc := range []struct{ version, deadline, reason string }{
		{"e2e-C-exit", "20s", "exited before it was connected"},
		{"e2e-C-hang", "3s", "was not connected within the 3s deadline"},
	} {
		before := agents[0].pub.count() + agents[1].pub.count()
		if out, err := run(t, "agents", "upgrade", "--config", c.config, "--to", tc.version, "--deadline", tc.deadline, "--wait"); err == nil {
			t.Fatalf("upgrade to %s succeeded:\n%s", tc.version, out)
		}
		r := status().GetRollout()
		if r.GetVersion() != tc.version || r.GetState() != "failed" || !strings.Contains(r.GetReason(), "rolled_back") || !strings.Contains(r.GetReason(), tc.reason) {
			t.Fatalf("rollout to %s: state %q, reason %q; want failed, rolled_back: %s", tc.version, r.GetState(), r.GetReason(), tc.reason)
		}
		if a := r.GetAgents(); a[0].GetState() != "failed" || a[1].GetState() != "waiting" {
			t.Errorf("rollout to %s: agents %v; want the first failed and the second not started", tc.version, a)
		}
		waitVersions("both agents connected on build B again after "+tc.version, "e2e-B")
		controlplanetest.WaitFor(t, 30*time.Second, "events flowing again after "+tc.version, func() bool {
			return agents[0].pub.count()+agents[1].pub.count() > before+20
		})
	}

	stopPublishing()
	pubs.Wait()
	want := map[string]bool{}
	for _, a := range agents {
		t.Logf("%s: %d events published, %d calls refused while it restarted", a.name, len(a.pub.published), a.pub.failures)
		for _, p := range a.pub.published {
			want[p] = true
		}
	}
	var got map[string]int
	controlplanetest.WaitFor(t, 60*time.Second, "every published event in the ledger", func() bool {
		got = map[string]int{}
		for _, ce := range c.allEvents(t) {
			if pos := ce.GetEvent().GetSource().GetPosition(); strings.HasPrefix(pos, "up-") {
				got[pos]++
			}
		}
		for p := range want {
			if got[p] == 0 {
				return false
			}
		}
		return true
	})
	for p, n := range got {
		if n != 1 {
			t.Errorf("event %s is in the ledger %d times", p, n)
		}
	}
}
