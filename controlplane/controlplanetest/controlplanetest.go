// Package controlplanetest starts real control plane nodes inside tests: raft on a
// loopback port, fast timings, data in t.TempDir, everything stopped by t.Cleanup.
package controlplanetest

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// FastRaft sets raft timings suitable for tests on loopback.
func FastRaft(c *store.Config) {
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

// Server is a running test node.
type Server struct {
	*controlplane.Server
	Config controlplane.Config
	// Admin calls this node's admin API (nil for a TestServer started without an admin
	// config; a TestCluster gives every node one, joined and restarted nodes too).
	Admin  adminv1connect.AdminServiceClient
	cancel context.CancelFunc
	done   chan error
	t      testing.TB
}

// Logger returns a logger that writes to the test log at warn level, or debug when
// CROSSDOCK_TEST_DEBUG is set.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CROSSDOCK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// TestServer starts a bootstrapped single-node control plane; cb may adjust the config.
func TestServer(t testing.TB, cb func(*controlplane.Config)) *Server {
	t.Helper()
	return startServer(t, cb, true)
}

func startServer(t testing.TB, cb func(*controlplane.Config), admin bool) *Server {
	t.Helper()
	cfg := controlplane.Config{
		NodeID:     "test-node-1",
		DataDir:    t.TempDir(),
		Listen:     "127.0.0.1:0",
		RaftListen: "127.0.0.1:0",
		Bootstrap:  true,
		Logger:     Logger(t),
		TuneStore:  FastRaft,
	}
	if cb != nil {
		cb(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		t.Fatalf("start control plane %s: %v", cfg.NodeID, err)
	}
	// A restart must come back on the same ports: peers know the node by them.
	cfg.Listen, cfg.RaftListen = srv.Addr(), srv.Store().RaftAddr()
	s := &Server{Server: srv, Config: cfg, done: make(chan error, 1), t: t}
	rctx, rcancel := context.WithCancel(context.Background())
	s.cancel = rcancel
	go func() { s.done <- srv.Run(rctx) }()
	t.Cleanup(s.Stop)
	if admin {
		s.Admin = AdminClient(t, srv.AdminConfigPath())
	}
	return s
}

// Running reports whether the node has not been stopped.
func (s *Server) Running() bool { return s.cancel != nil }

// stopWait bounds how long Stop waits for a node to shut down.
const stopWait = 2 * time.Minute

// Stop shuts the node down and waits; calling it twice is harmless. A node that does not
// stop within stopWait fails the test with every goroutine's stack (a shutdown that
// hangs would otherwise hold the package until go test's own timeout, whose dump a CI
// log cuts off).
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		buf := make([]byte, 16<<20)
		buf = buf[:runtime.Stack(buf, true)]
		s.t.Errorf("control plane %s did not stop within %s; goroutines:\n%s", s.Config.NodeID, stopWait, buf)
	}
}

// AdminClient returns an admin API client from an admin config file.
func AdminClient(t testing.TB, path string) adminv1connect.AdminServiceClient {
	t.Helper()
	return adminClientAt(t, path, "")
}

// adminClientAt is AdminClient aimed at the node listening on addr alone (the config's
// own nodes when addr is ""), so that a test reads that node's answers.
func adminClientAt(t testing.TB, path, addr string) adminv1connect.AdminServiceClient {
	t.Helper()
	c, err := cliconfig.Load(path)
	if err != nil {
		t.Fatalf("load admin config: %v", err)
	}
	if addr != "" {
		c.Addr, c.Addrs = addr, nil
	}
	client, closeFn, err := c.AdminClient()
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(closeFn)
	return client
}

// Token creates an enrollment token.
func (s *Server) Token(t testing.TB, ttl time.Duration, name string) string {
	t.Helper()
	res, err := s.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(ttl), AgentName: name}))
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return res.Msg.GetToken()
}

// WaitFor polls cond until it returns true, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}
