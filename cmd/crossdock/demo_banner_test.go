package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// TestDemoBannerCommandsRun runs the real binary as bin/crossdock from a directory, the
// way `make demo` does, and runs a command exactly as the banner prints it: the banner
// must name the binary by a path that works (not a bare crossdock that is not on $PATH).
func TestDemoBannerCommandsRun(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "crossdock"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir(), "CROSSDOCK_CONFIG=", "PATH=/usr/bin:/bin")
	logPath := filepath.Join(t.TempDir(), "demo.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	demo := exec.Command("bin/crossdock", "demo", "--skus", "42", "--rate", "5", "--local-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	demo.Dir, demo.Env, demo.Stdout, demo.Stderr = dir, env, f, f
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = demo.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		_ = demo.Process.Signal(syscall.SIGKILL)
		<-done
	})
	var banner string
	testutil.WaitFor(t, 60*time.Second, "the demo banner", func() bool {
		out, _ := os.ReadFile(logPath)
		banner = string(out)
		return strings.Contains(banner, "Ctrl-C stops everything.")
	})
	cfg := regexp.MustCompile(`export CROSSDOCK_CONFIG=(\S+)`).FindStringSubmatch(banner)
	line := regexp.MustCompile(`(?m)^  (\S+) agents ls +#`).FindStringSubmatch(banner)
	if cfg == nil || line == nil {
		t.Fatalf("banner has no export line or agents ls command:\n%s", banner)
	}
	if line[1] != "bin/crossdock" {
		t.Errorf("banner runs the CLI as %q, want bin/crossdock (the path from the working directory)\n%s", line[1], banner)
	}
	ls := exec.Command(line[1], "agents", "ls")
	ls.Dir, ls.Env = dir, append(env, "CROSSDOCK_CONFIG="+cfg[1])
	out, err := ls.CombinedOutput()
	if err != nil {
		t.Fatalf("the banner's command %q fails from the demo's directory: %v\n%s", line[1]+" agents ls", err, out)
	}
	if !strings.Contains(string(out), "demo-agent") {
		t.Errorf("agents ls shows no demo-agent:\n%s", out)
	}
	// The marketplace fails about 2.5% of requests: the demo's error-rate Alert fires.
	// It needs 1% errors over at least 50 attempts in a one-minute window. Failures are
	// random, so a window with few attempts can hold none, and a loaded machine (the
	// whole suite under -race) makes fewer attempts: give it several windows.
	var alerts []byte
	testutil.WaitFor(t, 4*time.Minute, "demo-market-errors firing in alerts ls", func() bool {
		c := exec.Command(line[1], "alerts", "ls")
		c.Dir, c.Env = dir, append(env, "CROSSDOCK_CONFIG="+cfg[1])
		alerts, _ = c.CombinedOutput()
		return strings.Contains(string(alerts), "demo-market-errors") && strings.Contains(string(alerts), "firing")
	})
	tr := exec.Command(line[1], "trace", "sku=SKU-00042")
	tr.Dir, tr.Env = dir, append(env, "CROSSDOCK_CONFIG="+cfg[1])
	if out, err := tr.CombinedOutput(); err != nil {
		t.Errorf("the banner's trace command: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`metrics +(http://\S+/metrics)`).FindStringSubmatch(banner)
	if m == nil || !regexp.MustCompile(`web console +https://\S+/ui/`).MatchString(banner) {
		t.Fatalf("banner shows no metrics or console URL:\n%s", banner)
	}
	res, err := http.Get(m[1])
	if err != nil {
		t.Fatalf("GET %s: %v", m[1], err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "crossdock_ledger_seq") {
		t.Errorf("GET %s: %d, want the control plane's metrics", m[1], res.StatusCode)
	}
	_ = demo.Process.Signal(os.Interrupt)
	select {
	case <-done:
		var ee *exec.ExitError
		if waitErr != nil && !errors.As(waitErr, &ee) {
			t.Fatal(waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop on Ctrl-C")
	}
}

func TestCommandFor(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin", "crossdock")
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "crossdock")
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	for _, tc := range []struct {
		name, cwd string
		look      func(string) (string, error)
		want      string
	}{
		{"below the working directory", dir, notFound, filepath.Join("bin", "crossdock")},
		{"in the working directory", filepath.Join(dir, "bin"), notFound, "." + string(filepath.Separator) + "crossdock"},
		{"on $PATH", dir, func(string) (string, error) { return exe, nil }, "crossdock"},
		{"another crossdock on $PATH", dir, func(string) (string, error) { return other, nil }, filepath.Join("bin", "crossdock")},
		{"elsewhere", t.TempDir(), notFound, resolve(exe)},
	} {
		if got := commandFor(exe, tc.cwd, tc.look); got != tc.want {
			t.Errorf("%s: commandFor = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The banner's examples ask for SKU-00042: a demo with fewer items refuses to start
// rather than print curls that answer "unknown SKU".
func TestDemoRefusesTooFewSKUs(t *testing.T) {
	out, err := exec.Command(binary, "demo", "--skus", "10").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "at least 42 items") {
		t.Fatalf("demo --skus 10: %v\n%s", err, out)
	}
}
