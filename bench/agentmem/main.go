// Command agentmem measures a real agent process's memory while it buffers a large
// backlog offline and then drains it: it starts `crossdock server` and `crossdock agent`
// from a built binary, stops the server, publishes N 256-byte events through the
// agent's local API, restarts the server, and waits until the outbox is empty, sampling
// the agent's /proc/<pid>/status every 50 ms.
//
//	make build && go run ./bench/agentmem -bin bin/crossdock -events 1000000
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/sample"
	"github.com/crossdock/crossdock/internal/platform/procmem"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1/agentv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func main() {
	bin := flag.String("bin", "bin/crossdock", "crossdock binary")
	n := flag.Int("events", 1000000, "events to buffer offline")
	memLimit := flag.String("memory-limit", "40MiB", "agent --memory-limit (0 disables)")
	flag.Parse()
	if err := run(*bin, *n, *memLimit); err != nil {
		fmt.Fprintln(os.Stderr, "agentmem:", err)
		os.Exit(1)
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startProc(bin, logPath string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(logPath), "GOMEMLIMIT=")
	return cmd, cmd.Start()
}

func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

func poll(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func run(bin string, n int, memLimit string) error {
	dir, err := os.MkdirTemp("", "agentmem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	api, err := freeAddr()
	if err != nil {
		return err
	}
	raftAddr, _ := freeAddr()
	local, _ := freeAddr()
	serverArgs := []string{"server", "--data-dir", filepath.Join(dir, "cp"), "--listen", api, "--raft-listen", raftAddr, "--write-cli-config=false", "--log-level", "warn", "--metrics-listen", ""}
	srv, err := startProc(bin, filepath.Join(dir, "server.log"), serverArgs...)
	if err != nil {
		return err
	}
	adminPath := filepath.Join(dir, "cp", "admin.yaml")
	if err := poll(60*time.Second, "admin.yaml", func() bool { _, err := os.Stat(adminPath); return err == nil }); err != nil {
		return err
	}
	cc, err := cliconfig.Load(adminPath)
	if err != nil {
		return err
	}
	admin, closeAdmin, err := cc.AdminClient()
	if err != nil {
		return err
	}
	defer closeAdmin()
	ctx := context.Background()
	var tok *connect.Response[adminv1.CreateTokenResponse]
	if err := poll(30*time.Second, "admin API", func() bool {
		tok, err = admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(time.Minute), AgentName: "mem"}))
		return err == nil
	}); err != nil {
		return err
	}
	ag, err := startProc(bin, filepath.Join(dir, "agent.log"), "agent", "--data-dir", filepath.Join(dir, "agent"), "--server", api,
		"--enroll-token", tok.Msg.GetToken(), "--local-addr", local, "--quota", "2GiB", "--memory-limit", memLimit, "--log-level", "warn")
	if err != nil {
		return err
	}
	defer stop(ag)
	client := agentv1connect.NewAgentServiceClient(http.DefaultClient, "http://"+local)
	status := func() *agentv1.AgentStatus {
		res, err := client.GetStatus(ctx, connect.NewRequest(&agentv1.GetStatusRequest{}))
		if err != nil {
			return nil
		}
		return res.Msg.GetStatus()
	}
	if err := poll(30*time.Second, "agent connected", func() bool { st := status(); return st != nil && st.GetUplinkState() == "connected" }); err != nil {
		return err
	}
	stop(srv) // offline from here
	if err := poll(30*time.Second, "agent to notice", func() bool { st := status(); return st != nil && st.GetUplinkState() != "connected" }); err != nil {
		return err
	}
	idle, err := procmem.ReadPID(ag.Process.Pid)
	if err != nil {
		return err
	}

	gen := sample.NewInventory(7, sample.DefaultWarehouses, 5000, time.Now())
	probe := gen.Next()
	sample.Pad(probe, 256)
	sampler := procmem.StartSamplerPID(ag.Process.Pid, 50*time.Millisecond)
	start := time.Now()
	const batch = 2000
	evs := make([]*eventv1.Event, 0, batch)
	for i := 0; i < n; i++ {
		ev := gen.Next()
		sample.Pad(ev, 256)
		evs = append(evs, ev)
		if len(evs) == batch || i == n-1 {
			if _, err := client.Publish(ctx, connect.NewRequest(&agentv1.PublishRequest{Events: evs, Connector: "bench"})); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			evs = evs[:0]
		}
	}
	bufDur := time.Since(start)
	bufPeak := sampler.Peak()
	sampler.ResetPeak()

	srv, err = startProc(bin, filepath.Join(dir, "server2.log"), serverArgs...)
	if err != nil {
		return err
	}
	defer stop(srv)
	drainStart := time.Now()
	if err := poll(30*time.Minute, "backlog drained", func() bool {
		st := status()
		return st != nil && st.GetOutbox().GetPendingEvents() == 0
	}); err != nil {
		return err
	}
	drainDur := time.Since(drainStart)
	drainPeak := sampler.Stop()
	size := proto.Size(probe)
	fmt.Printf("agentmem events=%d event_bytes~%d memory_limit=%s idle_rss_anon_mb=%.1f\n", n, size, memLimit, procmem.MB(idle.RssAnonKB))
	fmt.Printf("agentmem phase=buffer seconds=%.1f events_per_s=%.0f peak_rss_anon_mb=%.1f peak_vmhwm_mb=%.1f\n",
		bufDur.Seconds(), float64(n)/bufDur.Seconds(), procmem.MB(bufPeak.RssAnonKB), procmem.MB(bufPeak.VmHWMKB))
	fmt.Printf("agentmem phase=drain seconds=%.1f events_per_s=%.0f peak_rss_anon_mb=%.1f peak_vmhwm_mb=%.1f (includes reconnect backoff)\n",
		drainDur.Seconds(), float64(n)/drainDur.Seconds(), procmem.MB(drainPeak.RssAnonKB), procmem.MB(drainPeak.VmHWMKB))
	fmt.Printf("agentmem overall peak_rss_anon_mb=%.1f peak_vmhwm_mb=%.1f\n",
		procmem.MB(max(bufPeak.RssAnonKB, drainPeak.RssAnonKB)), procmem.MB(max(bufPeak.VmHWMKB, drainPeak.VmHWMKB)))
	return nil
}
