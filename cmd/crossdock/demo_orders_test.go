package main

import (
	"fmt"
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

// TestDemoOrderAcceptedThenShipped runs `crossdock demo` as the built binary, runs the
// curl its banner prints for demo-market's order exactly as printed (through sh), and
// waits for the demo to report the order accepted by the sample ERP with its import
// number, then shipped by the simulator.
func TestDemoOrderAcceptedThenShipped(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	logPath := filepath.Join(t.TempDir(), "demo.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	demo := exec.Command(binary, "demo", "--skus", "50", "--rate", "50", "--local-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	demo.Env, demo.Stdout, demo.Stderr = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG="), f, f
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { demo.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		_ = demo.Process.Signal(syscall.SIGKILL)
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("demo output:\n%s", tail(b, 6000))
		}
	})
	var out string
	testutil.WaitFor(t, 60*time.Second, "the demo banner with the order's curl", func() bool {
		b, _ := os.ReadFile(logPath)
		out = string(b)
		return strings.Contains(out, "events ls --key order=")
	})
	m := regexp.MustCompile(`(?s)\n  (curl -s http://\S+/crossdock\.agent\.v1\.AgentService/Publish .*?\}\]\}')`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no order curl in the banner:\n%s", out)
	}
	if b, err := exec.Command("sh", "-c", m[1]).CombinedOutput(); err != nil || !strings.Contains(string(b), "order:demo-market:PO-DEMO-1") {
		t.Fatalf("the banner's curl: %v\n%s", err, b)
	}
	accepted := regexp.MustCompile(`order (ord_\w+) \(demo-market PO-DEMO-1\): accepted by the ERP as (IMP-\d+)`)
	var id string
	testutil.WaitFor(t, 60*time.Second, "the demo to report the order accepted", func() bool {
		b, _ := os.ReadFile(logPath)
		if a := accepted.FindStringSubmatch(string(b)); a != nil {
			id = a[1]
			return true
		}
		return false
	})
	testutil.WaitFor(t, 90*time.Second, "the demo to report the order shipped", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "order "+id+": shipped, SH-")
	})
}
