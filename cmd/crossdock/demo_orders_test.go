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

	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// TestDemoOrderAcceptedThenShipped runs `crossdock demo` as the built binary and the
// curls its banner prints for demo-market, exactly as printed (through sh): SubmitOrder
// places the order, and GetOrder shows its status move to accepted, with the sample
// ERP's import number, then to shipped once the simulator ships it.
func TestDemoOrderAcceptedThenShipped(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		testsvc.Missing(t, "curl (Debian package curl)", err)
	}
	logPath := filepath.Join(t.TempDir(), "demo.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	demo := exec.Command(binary, "demo", "--skus", "50", "--rate", "50", "--local-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	demo.Env, demo.Stdout, demo.Stderr = append(os.Environ(), "HOME="+t.TempDir(), "TMPDIR="+t.TempDir(), "CROSSDOCK_CONFIG="), f, f
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
	testutil.WaitFor(t, 60*time.Second, "the demo banner with the order curls", func() bool {
		b, _ := os.ReadFile(logPath)
		out = string(b)
		return strings.Contains(out, " orders describe ord_")
	})
	key := regexp.MustCompile(`(?m)^  (export KEY=\S+)$`).FindStringSubmatch(out)
	submit := regexp.MustCompile(`(?s)\n  (curl [^\n]*\\\n\s+https://\S+/SubmitOrder \\\n\s+-d '[^']*')`).FindStringSubmatch(out)
	get := regexp.MustCompile(`(?s)\n  (curl [^\n]*\\\n\s+https://\S+/GetOrder -d '[^']*')`).FindStringSubmatch(out)
	if key == nil || submit == nil || get == nil {
		t.Fatalf("the banner lacks the partner key, the SubmitOrder or the GetOrder curl:\n%s", out)
	}
	sh := func(cmd string) string {
		t.Helper()
		b, err := exec.Command("sh", "-c", key[1]+"; "+cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, b)
		}
		return string(b)
	}
	if got := sh(submit[1]); !strings.Contains(got, `"status":"received"`) {
		t.Fatalf("SubmitOrder as the banner prints it answered %s", got)
	}
	var order string
	testutil.WaitFor(t, 60*time.Second, "GetOrder to answer accepted with the sample ERP's number", func() bool {
		order = sh(get[1])
		return strings.Contains(order, `"status":"accepted"`) && strings.Contains(order, `"erpOrderNumber":"IMP-`)
	})
	testutil.WaitFor(t, 90*time.Second, "GetOrder to answer shipped", func() bool {
		order = sh(get[1])
		return strings.Contains(order, `"status":"shipped"`)
	})
	b, _ := os.ReadFile(logPath)
	if !regexp.MustCompile(`order ord_\w+ \(demo-market PO-DEMO-1\): accepted by the ERP as IMP-\d+`).Match(b) {
		t.Errorf("the demo did not print the order's acceptance:\n%s", b)
	}
}
