package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
)

// cliStatus runs the binary and returns its exit status, stdout and stderr.
func cliStatus(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// TestApplyExitCodeAndReplayInterrupt runs the real binary against a server process:
// apply --dry-run --exit-code exits 1 on a difference, 0 on none and 2 on an error (as
// kubectl diff); replay stopped with Ctrl-C says that the replay goes on in the control
// plane and exits 130, not 1 with "context canceled". Then the server dies: a running
// events tail and a new command say so plainly (not `incomplete envelope`).
func TestApplyExitCodeAndReplayInterrupt(t *testing.T) {
	c := startServer(t, "--webhook-allow", "127.0.0.1/32")
	// A receiver that never answers while the test runs, so the replay cannot finish.
	stop := make(chan struct{})
	ms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(ms.Close)
	t.Cleanup(func() { close(stop) })
	dir := t.TempDir()
	docs := writeFile(t, filepath.Join(dir, "hang.yaml"), fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: hang}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: hang-stock}
spec:
  destination: hang
  match: {types: [inventory.level]}
`, ms.URL, e2eSecret))

	code, out, errOut := cliStatus(t, "apply", "--dry-run", "--exit-code", "-f", docs, "--config", c.config)
	if code != 1 || !strings.Contains(out, "destinations/hang: created") || strings.Contains(errOut, "error:") {
		t.Fatalf("dry run with a difference: exit %d, want 1 and no error\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _, errOut := cliStatus(t, "apply", "-f", docs, "--config", c.config); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, errOut)
	}
	if code, out, errOut := cliStatus(t, "apply", "--dry-run", "--exit-code", "-f", docs, "--config", c.config); code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("dry run without a difference: exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, _, errOut := cliStatus(t, "apply", "--dry-run", "--exit-code", "-f", filepath.Join(dir, "missing.yaml"), "--config", c.config); code != 2 || !strings.Contains(errOut, "error:") {
		t.Fatalf("dry run of a missing file: exit %d, want 2 with the error\nstderr: %s", code, errOut)
	}

	token, err := run(t, "token", "create", "--config", c.config, "--name", "erp-hang")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, "agent", "agent", "--data-dir", t.TempDir(), "--server", c.addr, "--local-addr", local, "--enroll-token", strings.TrimSpace(token))
	controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetUplinkState() == "connected"
	})
	events := writeFile(t, filepath.Join(dir, "events.jsonl"),
		`{"inventoryLevel":{"sku":"A","location":"WH1","onHand":"1","available":"1"}}`+"\n"+
			`{"inventoryLevel":{"sku":"B","location":"WH1","onHand":"2","available":"2"}}`+"\n")
	if _, err := run(t, "publish", "--file", events, "--agent", local); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "2 events committed", func() bool { return c.lastSeq(t) == 2 })

	stderrPath := filepath.Join(dir, "replay.stderr")
	f, err := os.Create(stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	replay := exec.Command(binary, "replay", "--route", "hang-stock", "--from", "1", "--config", c.config)
	replay.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	replay.Stderr, replay.Stdout = f, f
	if err := replay.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = replay.Wait(); close(done) }()
	t.Cleanup(func() { _ = replay.Process.Kill(); <-done })
	controlplanetest.WaitFor(t, 30*time.Second, "replay progress", func() bool {
		b, _ := os.ReadFile(stderrPath)
		return strings.Contains(string(b), "% scanned")
	})
	if err := replay.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("replay did not stop on Ctrl-C")
	}
	b, _ := os.ReadFile(stderrPath)
	if code := replay.ProcessState.ExitCode(); code != exitInterrupted {
		t.Errorf("replay after Ctrl-C exited %d, want %d\n%s", code, exitInterrupted, b)
	}
	mustContain(t, string(b), "stopped watching replay rp_", "the replay goes on in the control plane")
	if strings.Contains(string(b), "context canceled") {
		t.Errorf("replay after Ctrl-C says context canceled:\n%s", b)
	}

	// routes test given what events ls -o json prints when nothing matched.
	empty := writeFile(t, filepath.Join(dir, "none.json"), `{"lastSeq":"2"}`+"\n")
	if code, _, errOut := cliStatus(t, "routes", "test", "hang-stock", "--event", empty, "--config", c.config); code != 1 || !strings.Contains(errOut, "holds an events ls answer with no event in it") || strings.Contains(errOut, "unknown field") {
		t.Errorf("routes test on an empty events ls answer: exit %d\n%s", code, errOut)
	}

	// Shell completion asks the control plane for names (cobra's hidden __complete is
	// what the installed shell scripts call on Tab).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agents", "revoke", ""}, "erp-hang"},
		{[]string{"agents", "describe", ""}, "erp-hang"},
		{[]string{"routes", "test", ""}, "hang-stock"},
		{[]string{"history", "destination", ""}, "hang"},
		{[]string{"delete", "route", ""}, "hang-stock"},
		{[]string{"history", ""}, "destination"},
		{[]string{"replay", "--route", ""}, "hang-stock"},
		{[]string{"dlq", "ls", "--destination", ""}, "hang"},
	} {
		out, err := run(t, append([]string{"__complete", "--config", c.config}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(out, "\n"); !slices.Contains(lines, tc.want) {
			t.Errorf("completion of %q offers %q, want %s", tc.args, lines, tc.want)
		}
	}

	// The server dies under a running events tail, then a command finds it gone.
	tailOut, tailErr := filepath.Join(dir, "tail.out"), filepath.Join(dir, "tail.err")
	to, err := os.Create(tailOut)
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	te, err := os.Create(tailErr)
	if err != nil {
		t.Fatal(err)
	}
	defer te.Close()
	tail := exec.Command(binary, "events", "tail", "--from", "1", "--config", c.config)
	tail.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	tail.Stdout, tail.Stderr = to, te
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	tailDone := make(chan struct{})
	go func() { _ = tail.Wait(); close(tailDone) }()
	t.Cleanup(func() { _ = tail.Process.Kill(); <-tailDone })
	controlplanetest.WaitFor(t, 30*time.Second, "events tail to print both events", func() bool {
		b, _ := os.ReadFile(tailOut)
		return strings.Count(string(b), "inventory.level") == 2
	})
	c.proc.kill()
	select {
	case <-tailDone:
	case <-time.After(30 * time.Second):
		t.Fatal("events tail did not end when the server died")
	}
	b, _ = os.ReadFile(tailErr)
	mustContain(t, string(b), "the control plane at "+c.addr+" closed the connection: is it still running?")
	code, _, errOut = cliStatus(t, "routes", "ls", "--config", c.config)
	if code != 1 || !strings.Contains(errOut, "the control plane at "+c.addr+" is not answering (connection refused): is it running") {
		t.Errorf("routes ls against a dead server: exit %d\n%s", code, errOut)
	}
}
