package agent_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// localPost sends a Connect JSON call to the agent's local API with the given Host.
func localPost(t *testing.T, addr, host, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/crossdock.agent.v1.AgentService/"+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestLocalAPIHostCheck: on a loopback address the local API answers only loopback
// host names with its port, so a page in the host's browser that rebinds its own
// name to 127.0.0.1 cannot publish.
func TestLocalAPIHostCheck(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "a1"), func(c *agent.Config) { c.LocalAddr = "127.0.0.1:0" })
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	addr := a.LocalAddr()
	_, port, _ := net.SplitHostPort(addr)
	publish := `{"events":[{"type":"inventory.level","inventoryLevel":{"sku":"A-1","location":"WH1","onHand":"1"}}]}`
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "localhost:1"} {
		code, body := localPost(t, addr, host, "Publish", publish)
		if code != http.StatusForbidden || !strings.Contains(body, "permission_denied") {
			t.Fatalf("Publish with Host %q: %d %s; want 403 permission_denied", host, code, body)
		}
	}
	if n := a.Status().GetOutbox().GetLastSeq(); n != 0 {
		t.Fatalf("refused publishes wrote %d events", n)
	}
	for _, host := range []string{addr, "localhost:" + port, "LOCALHOST:" + port} {
		if code, body := localPost(t, addr, host, "GetStatus", "{}"); code != http.StatusOK {
			t.Fatalf("GetStatus with Host %q: %d %s", host, code, body)
		}
	}
	if code, body := localPost(t, addr, addr, "Publish", publish); code != http.StatusOK || a.Status().GetOutbox().GetLastSeq() != 1 {
		t.Fatalf("Publish with Host %q: %d %s", addr, code, body)
	}
}

// TestLocalAPINonLoopbackWarns: bound to every interface, the agent says loudly that
// its unauthenticated local API is reachable from the network.
func TestLocalAPINonLoopbackWarns(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	var logs testutil.LogBuffer
	a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "a1"), func(c *agent.Config) {
		c.LocalAddr = "0.0.0.0:0"
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	controlplanetest.WaitFor(t, 10*time.Second, "a warning about the non-loopback local API", func() bool {
		return strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "non-loopback address")
	})
}
