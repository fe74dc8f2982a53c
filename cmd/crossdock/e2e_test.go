package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/sample"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// binary is the crossdock binary built once for the multi-process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crossdock-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "crossdock")
	// Built as make release builds it (static, CGO off), so the tests run what ships;
	// TestVersion's release build then only links again.
	build := exec.Command("go", "build", "-trimpath", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build crossdock: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running crossdock process whose output goes to a file in the test's dir.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process exited
	err  error         // its exit status, valid after done
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startBin(t, name, binary, args...)
}

// startBin is start for another executable (a copy of the binary, another build).
func startBin(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 4 KiB) ---\n%s", name, tail(b, 4096))
		}
	})
	return p
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// run runs a CLI command to completion and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crossdock %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// handedOut are the ports freePort returned in this test process. A port is free again
// once freePort closes its probe, so the kernel can hand it out twice before the first
// taker binds it (a node's raft port was once another node's API port).
var handedOut sync.Map

// freePort returns a port free on both TCP and UDP of 127.0.0.1 that no earlier call
// returned.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			if _, taken := handedOut.LoadOrStore(port, true); !taken {
				return port
			}
		}
	}
	t.Fatal("no free port")
	return 0
}

type cluster struct {
	dataDir string
	addr    string
	config  string
	admin   adminv1connect.AdminServiceClient
	proc    *proc
	args    []string // the server's flags, for a restart from the same data dir and ports
	starts  int
}

// startServer starts a one-node control plane through the binary; extra are more
// server flags (e.g. --webhook-allow 127.0.0.1/32 for a test's loopback receivers).
func startServer(t *testing.T, extra ...string) *cluster {
	t.Helper()
	c := &cluster{dataDir: t.TempDir()}
	port := freePort(t)
	c.addr = fmt.Sprintf("127.0.0.1:%d", port)
	c.config = filepath.Join(c.dataDir, "admin.yaml")
	c.args = append([]string{"server", "--data-dir", c.dataDir, "--node-id", "cp1",
		"--listen", c.addr, "--raft-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--write-cli-config=false", "--metrics-listen", ""}, extra...)
	c.starts = 1
	c.proc = start(t, "server", c.args...)
	controlplanetest.WaitFor(t, 60*time.Second, "server to write admin.yaml", func() bool {
		_, err := os.Stat(c.config)
		return err == nil
	})
	c.admin = controlplanetest.AdminClient(t, c.config)
	controlplanetest.WaitFor(t, 30*time.Second, "admin API", func() bool {
		_, err := c.admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		return err == nil
	})
	return c
}

// restart starts the server again from its data dir, on the same ports, after it was
// stopped, and waits for its admin API.
func (c *cluster) restart(t *testing.T) {
	t.Helper()
	c.starts++
	c.proc = start(t, fmt.Sprintf("server-run%d", c.starts), c.args...)
	controlplanetest.WaitFor(t, 30*time.Second, "admin API after the restart", func() bool {
		_, err := c.admin.GetClusterStatus(context.Background(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		return err == nil
	})
}

func (c *cluster) lastSeq(t *testing.T) uint64 {
	t.Helper()
	res, err := c.admin.ListEvents(context.Background(), connect.NewRequest(&adminv1.ListEventsRequest{FromSeq: 1 << 62, Limit: 1}))
	if err != nil {
		t.Logf("list events: %v", err)
		return 0
	}
	return res.Msg.GetLastSeq()
}

func (c *cluster) allEvents(t *testing.T) []*eventv1.CommittedEvent {
	t.Helper()
	var out []*eventv1.CommittedEvent
	from := uint64(1)
	for {
		res, err := c.admin.ListEvents(context.Background(), connect.NewRequest(&adminv1.ListEventsRequest{FromSeq: from, Limit: 10000}))
		if err != nil {
			t.Fatalf("list events: %v", err)
		}
		out = append(out, res.Msg.GetEvents()...)
		if len(res.Msg.GetEvents()) == 0 {
			return out
		}
		from = res.Msg.GetEvents()[len(res.Msg.GetEvents())-1].GetSeq() + 1
	}
}

// writeEvents writes n sample inventory changes (positions sample:1..sample:n) as JSONL
// and returns the path.
func writeEvents(t *testing.T, n int) string {
	t.Helper()
	return writeSampleEvents(t, 42, sample.DefaultWarehouses, n, 1)[0]
}

func agentStatus(addr string) (*agentv1.AgentStatus, error) {
	res, err := localClient(addr).GetStatus(context.Background(), connect.NewRequest(&agentv1.GetStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetStatus(), nil
}

// TestEndToEndKillAgent runs the control plane and an agent as processes of the built
// binary and checks the agent's outbox is durable across SIGKILL, with nothing
// published again to refill a loss:
//
//   - with the control plane stopped, 20,000 events are published and confirmed
//     pending in the outbox (none committed), then the agent is SIGKILLed;
//   - the control plane and the agent come back; part-way through the drain the agent
//     is SIGKILLed again (the test fails if everything was already committed, as the
//     kill would then prove nothing) and restarted;
//   - the ledger must hold each event exactly once, in per-key source order, over the
//     expected transport.
//
// Only then is the same file published again, as a separate dedup check: the ledger
// must not grow.
func TestEndToEndKillAgent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		agentArgs []string
		transport string
	}{
		{"quic", nil, "h3"},
		{"http2", []string{"--no-quic"}, "h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 20000
			c := startServer(t)
			token, err := run(t, "token", "create", "--config", c.config, "--name", "erp-east")
			if err != nil {
				t.Fatal(err)
			}
			token = strings.TrimSpace(token)
			agentDir := t.TempDir()
			local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			agentArgs := append([]string{"agent", "--data-dir", agentDir, "--server", c.addr, "--local-addr", local}, tc.agentArgs...)
			ag := start(t, "agent-1", append(agentArgs, "--enroll-token", token)...)
			status := func() (*agentv1.AgentStatus, string) {
				st, err := agentStatus(local)
				if err != nil {
					return nil, err.Error()
				}
				return st, st.String()
			}
			waitConnected := func(what string) {
				t.Helper()
				testutil.WaitForDetail(t, 30*time.Second, 20*time.Millisecond, what, func() (bool, string) {
					st, d := status()
					return st.GetUplinkState() == "connected", d
				})
			}
			waitConnected("agent connected")
			if st, _ := status(); st.GetTransport() != tc.transport {
				t.Fatalf("agent transport = %q, want %q", st.GetTransport(), tc.transport)
			}

			// 1. Hold every event in the outbox: the control plane is down.
			c.proc.kill()
			testutil.WaitForDetail(t, 30*time.Second, 20*time.Millisecond, "agent to notice the control plane is gone", func() (bool, string) {
				st, d := status()
				return st != nil && st.GetUplinkState() != "connected", d
			})
			file := writeEvents(t, total)
			if _, err := run(t, "publish", "--file", file, "--agent", local, "--batch", "250"); err != nil {
				t.Fatal(err)
			}
			st, d := status()
			if st.GetOutbox().GetPendingEvents() != total || st.GetOutbox().GetLastSeq() != total || st.GetCommittedSeq() != 0 {
				t.Fatalf("before the kill the outbox must hold all %d events pending and none committed; status: %s", total, d)
			}
			ag.kill()

			// 2. Kill the agent again while it drains into the restarted control plane.
			// Small batches, one in flight, keep the drain slow enough to cut into.
			c.restart(t)
			slow := append(slices.Clone(agentArgs), "--batch", "50", "--window", "1")
			ag = start(t, "agent-2", slow...)
			testutil.WaitForDetail(t, 60*time.Second, 5*time.Millisecond, "some events committed after the restart", func() (bool, string) {
				n := c.lastSeq(t)
				return n >= 1000, fmt.Sprintf("last seq %d", n)
			})
			ag.kill()
			killedAt := c.lastSeq(t)
			if killedAt >= total {
				t.Fatalf("every event (%d) was committed before the second kill: the kill came too late to test anything; slow the drain", killedAt)
			}

			// 3. Restart the agent; nothing is published again.
			start(t, "agent-3", agentArgs...)
			waitConnected("agent reconnected")
			testutil.WaitForDetail(t, 120*time.Second, 50*time.Millisecond, "outbox drained", func() (bool, string) {
				st, d := status()
				return st != nil && st.GetOutbox().GetPendingEvents() == 0 && st.GetCommittedSeq() == st.GetOutbox().GetLastSeq(), d
			})
			if got := c.lastSeq(t); got != total {
				t.Fatalf("ledger last seq = %d, want %d (second kill at %d)", got, total, killedAt)
			}
			t.Logf("first kill with %d events pending, second kill with %d of %d committed", total, killedAt, total)

			// Exactly once: the ids in the ledger are the ids the file's events must get.
			evs := c.allEvents(t)
			checkKillAgentLedger(t, evs, total)

			// 4. Dedup, separately: the same file again adds nothing.
			if _, err := run(t, "publish", "--file", file, "--agent", local); err != nil {
				t.Fatal(err)
			}
			testutil.WaitForDetail(t, 120*time.Second, 50*time.Millisecond, "re-published file drained", func() (bool, string) {
				st, d := status()
				return st.GetOutbox().GetLastSeq() == 2*total && st.GetCommittedSeq() == 2*total, d
			})
			if got := c.lastSeq(t); got != total {
				t.Fatalf("after publishing the same file again the ledger last seq = %d, want %d (duplicates committed)", got, total)
			}

			res, err := c.admin.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(res.Msg.GetAgents()); n != 1 {
				t.Fatalf("%d agents listed, want 1", n)
			}
			a := res.Msg.GetAgents()[0]
			if a.GetId() != "erp-east" || !a.GetConnected() || a.GetTransport() != tc.transport || a.GetEventsCommitted() != total {
				t.Fatalf("agent record = %v", a)
			}

			// The CLI reads the ledger by business key, in order.
			out, err := run(t, "events", "ls", "--config", c.config, "--key", "sku=SKU-00042", "-o", "json", "--limit", "10000")
			if err != nil {
				t.Fatal(err)
			}
			var listed adminv1.ListEventsResponse
			if err := protojson.Unmarshal([]byte(out), &listed); err != nil {
				t.Fatalf("events ls -o json is not a ListEventsResponse: %v", err)
			}
			n := 0
			for _, ce := range evs {
				if ce.GetEvent().GetKeys()["sku"] == "SKU-00042" {
					n++
				}
			}
			if len(listed.GetEvents()) != n || n == 0 {
				t.Fatalf("events ls --key sku=SKU-00042 returned %d events, ledger has %d", len(listed.GetEvents()), n)
			}
		})
	}
}

// checkKillAgentLedger checks evs holds each of the file's total events exactly once,
// with gap-free seqs and each key's source order kept.
func checkKillAgentLedger(t *testing.T, evs []*eventv1.CommittedEvent, total int) {
	t.Helper()
	want := map[string]bool{}
	for i := 1; i <= total; i++ {
		want[canonical.ID("erp-east", "publish", "sample:"+strconv.Itoa(i))] = true
	}
	seen := map[string]bool{}
	lastPos := map[string]int{}
	for i, ce := range evs {
		if ce.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d: ledger seqs must be gap-free", i, ce.GetSeq())
		}
		id := ce.GetEvent().GetId()
		if !want[id] {
			t.Fatalf("unexpected event id %s at seq %d", id, ce.GetSeq())
		}
		if seen[id] {
			t.Fatalf("event %s committed twice", id)
		}
		seen[id] = true
		pos, err := strconv.Atoi(strings.TrimPrefix(ce.GetEvent().GetSource().GetPosition(), "sample:"))
		if err != nil {
			t.Fatalf("seq %d: source position %q", ce.GetSeq(), ce.GetEvent().GetSource().GetPosition())
		}
		key := fmtKeys(ce.GetEvent().GetKeys())
		if pos <= lastPos[key] {
			t.Fatalf("key %s: position %d committed after %d (per-key order broken)", key, pos, lastPos[key])
		}
		lastPos[key] = pos
	}
	if len(seen) != total {
		var missing []int
		for i := 1; i <= total && len(missing) < 10; i++ {
			if !seen[canonical.ID("erp-east", "publish", "sample:"+strconv.Itoa(i))] {
				missing = append(missing, i)
			}
		}
		t.Fatalf("ledger holds %d of the %d events; first missing positions %v", len(seen), total, missing)
	}
}

// TestCLIConfigResolution checks flags win over environment, which wins over the file.
func TestCLIConfigResolution(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := cliconfig.Write(path, &cliconfig.Config{Addr: "file:1", Token: "file-token", CAPEM: "pem"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CROSSDOCK_CONFIG", path)
	t.Setenv("CROSSDOCK_ADDR", "")
	t.Setenv("CROSSDOCK_TOKEN", "env-token")
	g = globals{}
	c, err := resolveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "file:1" || c.Token != "env-token" {
		t.Fatalf("got addr %q token %q; want file addr and env token", c.Addr, c.Token)
	}
	g = globals{addr: "flag:2", token: "flag-token"}
	c, err = resolveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "flag:2" || c.Token != "flag-token" {
		t.Fatalf("got addr %q token %q; want the flags", c.Addr, c.Token)
	}
	g = globals{}
	t.Setenv("CROSSDOCK_CONFIG", filepath.Join(dir, "missing.yaml"))
	if _, err := resolveConfig(); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("a missing explicit config file must be an error naming it, got %v", err)
	}
}

// TestAdminNeedsToken checks the admin API refuses calls without a valid token.
func TestAdminNeedsToken(t *testing.T) {
	s := controlplanetest.TestServer(t, nil)
	c, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(c.CAPEM))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	for _, tok := range []string{"", "cda1.0000000000000000.bogus", "garbage"} {
		cl := adminv1connect.NewAdminServiceClient(&http.Client{Transport: cliconfig.Bearer{Token: tok, Next: hc.Transport}}, "https://"+c.Addr)
		_, err := cl.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("token %q: got %v, want unauthenticated", tok, err)
		}
	}
}
