package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// runEnv runs a CLI command with env added to a fresh HOME and returns stdout and
// stderr apart.
func runEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=", "CROSSDOCK_ADDR="), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// peersJSON runs `cluster peers -o json` with config and returns its answer and stderr.
func peersJSON(t *testing.T, config string) (*adminv1.GetClusterStatusResponse, string, error) {
	t.Helper()
	out, stderr, err := runEnv(t, nil, "cluster", "peers", "--config", config, "-o", "json")
	if err != nil {
		return nil, stderr, fmt.Errorf("%w: %s", err, stderr)
	}
	var st adminv1.GetClusterStatusResponse
	if err := protojson.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster peers -o json is not a GetClusterStatusResponse: %v\n%s", err, out)
	}
	return &st, stderr, nil
}

// TestCLIFailover SIGKILLs the leader of a three-node cluster of real processes and
// checks the operator's side of the failover: the next CLI command succeeds with the
// same config and no --addr (the config learned every node from `cluster peers`),
// `cluster peers` shows the dead node as unreachable, not as a follower, and an agent
// streaming to the dead leader leaves the "connected" state within agentDeadBound.
func TestCLIFailover(t *testing.T) {
	// uplink.DeadServerTimeout (5s) plus room for a loaded machine; before, QUIC's 10s
	// idle timeout kept the agent "connected" for 10-12s.
	const agentDeadBound = 8 * time.Second
	c := startCluster(t)

	// An operator's config as bootstrap wrote it (one node: the others joined later).
	config := filepath.Join(t.TempDir(), "config.yaml")
	boot := *c.cfg
	boot.Addrs = nil
	if err := cliconfig.Write(config, &boot); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := peersJSON(t, config); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(stderr, "stored the cluster's nodes in "+config) {
		t.Fatalf("cluster peers did not say it stored the nodes; stderr:\n%s", stderr)
	}
	learned, err := cliconfig.Load(config)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(learned.Servers()); got != 3 {
		t.Fatalf("after cluster peers the config names %d nodes (%v), want 3", got, learned.Servers())
	}

	a := c.startAgent("erp-failover")
	old := c.waitLeader("")
	testutil.WaitForDetail(t, 30*time.Second, 50*time.Millisecond, "the agent to stream to the leader", func() (bool, string) {
		st, err := agentStatus(a.local)
		if err != nil {
			return false, err.Error()
		}
		return st.GetUplinkState() == "connected" && st.GetServer() == old.addr, st.String()
	})
	// The dead leader is the node the config tries first.
	others := []string{}
	for _, s := range learned.Servers() {
		if s != old.addr {
			others = append(others, s)
		}
	}
	learned.Addr, learned.Addrs = old.addr, others
	if err := cliconfig.Write(config, learned); err != nil {
		t.Fatal(err)
	}

	old.proc.kill()
	killed := time.Now()
	var left time.Duration
	testutil.WaitForDetail(t, agentDeadBound, 20*time.Millisecond, "the agent to leave connected after its server was SIGKILLed", func() (bool, string) {
		st, err := agentStatus(a.local)
		if err != nil {
			return false, err.Error()
		}
		left = time.Since(killed)
		return st.GetUplinkState() != "connected" || st.GetServer() != old.addr, st.String()
	})
	t.Logf("agent left connected %s after the kill", left.Round(time.Millisecond))

	nl := c.waitLeader(old.id)
	out, stderr, err := runEnv(t, nil, "token", "create", "--config", config, "--kind", "agent", "--name", "after-failover")
	if err != nil {
		t.Fatalf("the first command after the failover failed without --addr: %v\n%s", err, stderr)
	}
	if strings.TrimSpace(out) == "" {
		t.Fatal("token create printed no token")
	}
	// A server-streaming call too (the download of a snapshot, from whichever node
	// answers).
	snap := filepath.Join(t.TempDir(), "after-failover.snap")
	if _, stderr, err := runEnv(t, nil, "snapshot", "save", "--config", config, snap); err != nil {
		t.Fatalf("snapshot save (a stream) after the failover failed without --addr: %v\n%s", err, stderr)
	}
	checkSnapshotInspect(t, snap)

	testutil.WaitForDetail(t, 30*time.Second, 100*time.Millisecond, "cluster peers to show the dead node as unreachable", func() (bool, string) {
		st, _, err := peersJSON(t, config)
		if err != nil {
			return false, err.Error()
		}
		ok := st.GetLeaderId() == nl.id
		for _, p := range st.GetPeers() {
			if p.GetId() == old.id && p.GetRole() == "follower" {
				t.Fatalf("cluster peers shows the SIGKILLed node %s as a follower:\n%v", old.id, st)
			}
			if p.GetId() == old.id {
				ok = ok && p.GetRole() == "unreachable"
			}
		}
		// The new leader has not heard the dead node's build (features), so it names it.
		return ok && slices.Contains(st.GetOlderBuilds(), old.id), st.String()
	})
	if _, stderr, err := runEnv(t, nil, "cluster", "peers", "--config", config); err != nil {
		t.Fatalf("cluster peers: %v\n%s", err, stderr)
	} else if !strings.Contains(stderr, "not yet reported this build to the leader") || !strings.Contains(stderr, old.id) {
		t.Fatalf("cluster peers (table) does not name the dead node %s as not yet reported; stderr:\n%s", old.id, stderr)
	}

	// The node comes back: it is a follower again.
	c.start(old)
	testutil.WaitForDetail(t, 60*time.Second, 100*time.Millisecond, "the restarted node to be a follower again", func() (bool, string) {
		st, _, err := peersJSON(t, config)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range st.GetPeers() {
			if p.GetId() == old.id {
				// Once it has reported its build, the leader names no node.
				return p.GetRole() == "follower" && len(st.GetOlderBuilds()) == 0, st.String()
			}
		}
		return false, st.String()
	})
}

// TestCLIConfigElsewhere checks the two warnings about a CLI config of another
// cluster: the server bootstrapping next to an existing ~/.config file says it left it
// alone and that it points elsewhere, and the CLI dialling a node with a config whose
// CA did not sign the node's certificate says which config it used and that it belongs
// to another cluster.
func TestCLIConfigElsewhere(t *testing.T) {
	a := startServer(t)
	home := t.TempDir()
	xdg := filepath.Join(home, "xdg")
	userCfg := filepath.Join(xdg, "crossdock", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(userCfg), 0o700); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(userCfg, before, 0o600); err != nil {
		t.Fatal(err)
	}

	// A second cluster bootstraps with the first one's config in ~/.config.
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(t.TempDir(), "server-b.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "server", "--data-dir", dir, "--node-id", "cpb", "--listen", addr,
		"--raft-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--metrics-listen", "")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+xdg, "CROSSDOCK_CONFIG=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	testutil.WaitForDetail(t, 30*time.Second, 50*time.Millisecond, "the second server to warn about the CLI config", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "left the existing CLI config alone: it points at another cluster"), string(b)
	})
	after, err := os.ReadFile(userCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("bootstrap changed the existing CLI config")
	}

	// The CLI with cluster A's config dialling cluster B.
	_, stderr, err := runEnv(t, []string{"CROSSDOCK_CONFIG=" + userCfg}, "agents", "ls", "--addr", addr)
	if err == nil {
		t.Fatal("a command with another cluster's CA succeeded")
	}
	for _, want := range []string{userCfg, "belongs to another cluster", addr} {
		if !strings.Contains(stderr, want) {
			t.Errorf("error does not say %q:\n%s", want, stderr)
		}
	}

	// config show and version name the config in use.
	out, _, err := runEnv(t, []string{"CROSSDOCK_CONFIG=" + userCfg}, "config", "show")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := cliconfig.Load(userCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "config:  "+userCfg) || !strings.Contains(out, "nodes:   "+a.addr) || strings.Contains(out, ac.Token) {
		t.Fatalf("config show:\n%s", out)
	}
	out, _, err = runEnv(t, []string{"CROSSDOCK_CONFIG=" + userCfg}, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "cli config:    "+userCfg+"\n") {
		t.Fatalf("version does not name the CLI config %s:\n%s", userCfg, out)
	}
}

// TestVersion checks `crossdock version` of the test binary (commit and date from the
// VCS stamp) and of a release build (from -ldflags, CGO off): every field, and that the
// release binary is static.
func TestVersion(t *testing.T) {
	check := func(bin, wantVersion, wantCommit, wantDate string) {
		t.Helper()
		cmd := exec.Command(bin, "version", "-o", "json")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=/nonexistent/config.yaml")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("version -o json: %v\n%s", err, out)
		}
		want := map[string]any{
			"version": wantVersion, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH,
			"ledger_layout": float64(ledger.Layout), "outbox_layout": float64(outbox.Layout),
			"cli_config": "/nonexistent/config.yaml", "cli_config_exists": false,
		}
		if wantCommit != "" {
			want["commit"] = wantCommit
		}
		if wantDate != "" {
			want["date"] = wantDate
		}
		for k, w := range want {
			if v[k] != w {
				t.Errorf("%s version: %s = %v, want %v", bin, k, v[k], w)
			}
		}
		if c, _ := v["commit"].(string); c == "" {
			t.Errorf("%s version: no commit: %s", bin, out)
		}
		if d, _ := v["date"].(string); d == "" {
			t.Errorf("%s version: no date: %s", bin, out)
		}
		// The table names the same fields.
		cmd = exec.Command(bin, "version")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=/nonexistent/config.yaml")
		table, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{"crossdock " + wantVersion + "\n", fmt.Sprintf("ledger layout: %d\n", ledger.Layout),
			fmt.Sprintf("outbox layout: %d\n", outbox.Layout), "go:            " + runtime.Version(), "commit:        ", "built:         "} {
			if !strings.Contains(string(table), line) {
				t.Errorf("%s version does not print %q:\n%s", bin, line, table)
			}
		}
	}
	// The test binary has no -ldflags: its commit and date are the VCS stamp's, or
	// "unknown" without one (TestBuildFrom covers the stamp).
	check(binary, "dev", "", "")

	// A release build, as make release makes it.
	rel := filepath.Join(t.TempDir(), "crossdock")
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X main.version=v9.8.7 -X main.commit=0123abc -X main.date=2026-01-02T03:04:05Z", "-o", rel, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("release build with CGO_ENABLED=0: %v\n%s", err, out)
	}
	check(rel, "v9.8.7", "0123abc", "2026-01-02T03:04:05Z")
	if _, err := exec.LookPath("file"); err == nil {
		out, err := exec.Command("file", rel).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "statically linked") || !strings.Contains(string(out), "stripped") || strings.Contains(string(out), "not stripped") {
			t.Errorf("file says the release binary is not static and stripped: %s", out)
		}
	} else {
		t.Log("no file(1): static linking not checked with it")
	}
	if _, err := exec.LookPath("ldd"); err == nil {
		out, _ := exec.Command("ldd", rel).CombinedOutput()
		if !strings.Contains(string(out), "not a dynamic executable") && !strings.Contains(string(out), "statically linked") {
			t.Errorf("ldd lists libraries of the release binary: %s", out)
		}
	}
}

// checkSnapshotInspect runs snapshot inspect on a saved backup: it needs no server,
// its sections add up to its totals and hold the cluster's records, and a damaged
// copy is refused with the reason.
func checkSnapshotInspect(t *testing.T, snap string) {
	t.Helper()
	out, stderr, err := runEnv(t, nil, "snapshot", "inspect", "-o", "json", snap)
	if err != nil {
		t.Fatalf("snapshot inspect: %v\n%s", err, stderr)
	}
	var ins snapshotInspection
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatalf("snapshot inspect -o json: %v\n%s", err, out)
	}
	var records, size uint64
	have := map[string]bool{}
	for _, s := range ins.Sections {
		records += s.Records
		size += s.Bytes
		have[s.Prefix] = s.Records > 0
	}
	if ins.Index == 0 || !strings.HasPrefix(ins.ClusterID, "cl_") || records != ins.Records || size != ins.Bytes || !have["ca"] || !have["n/"] || !have["m/"] {
		t.Errorf("snapshot inspect: %+v; want an index, a cluster id, the CA, the nodes and the ledger metadata, sections adding up to the totals", ins)
	}
	table, _, err := runEnv(t, nil, "snapshot", "inspect", snap)
	if err != nil || !strings.Contains(table, "PREFIX") || !strings.Contains(table, "cluster CA") {
		t.Errorf("snapshot inspect (table): %v\n%s", err, table)
	}

	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "damaged.snap")
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := runEnv(t, nil, "snapshot", "inspect", bad); err == nil || !strings.Contains(stderr, "corrupt") {
		t.Errorf("snapshot inspect of a damaged file: err %v, stdout %q, stderr %q; want a refusal saying it is corrupt", err, out, stderr)
	}
}
