package main

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
)

// stream is `go test -json` output of two packages: one passes with an integration
// test skipped for a missing service, one fails.
const stream = `{"Action":"start","Package":"github.com/crossdock/crossdock/plugins/pgcdc"}
{"Action":"run","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestSlot"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestSlot","Output":"=== RUN   TestSlot\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestSlot","Output":"    pgcdc_test.go:40: INTEGRATION TEST NOT RUN: PostgreSQL is not available (pg_ctl not found); install it\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestSlot","Output":"--- SKIP: TestSlot (0.00s)\n"}
{"Action":"skip","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestSlot"}
{"Action":"run","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestShort"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestShort","Output":"    x_test.go:1: an ordinary skip\n"}
{"Action":"skip","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestShort"}
{"Action":"run","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestParse"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestParse","Output":"    a log line of a passing test\n"}
{"Action":"pass","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Test":"TestParse"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Output":"PASS\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/plugins/pgcdc","Output":"ok  \tgithub.com/crossdock/crossdock/plugins/pgcdc\t0.5s\n"}
{"Action":"pass","Package":"github.com/crossdock/crossdock/plugins/pgcdc"}
{"Action":"run","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken","Output":"=== RUN   TestBroken\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken","Output":"    agent_test.go:9: want 2, got 3\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken","Output":"    handler.go:322: time=2026-12-05T20:39:04Z level=ERROR msg=\"a log record\"\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken","Output":"--- FAIL: TestBroken (0.00s)\n"}
{"Action":"fail","Package":"github.com/crossdock/crossdock/agent","Test":"TestBroken"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Output":"FAIL\n"}
{"Action":"output","Package":"github.com/crossdock/crossdock/agent","Output":"FAIL\tgithub.com/crossdock/crossdock/agent\t0.1s\n"}
{"Action":"fail","Package":"github.com/crossdock/crossdock/agent"}
`

func summarize(t *testing.T, in string) (string, int) {
	t.Helper()
	var out strings.Builder
	s := newSummary(&out)
	sc := bufio.NewScanner(strings.NewReader(in))
	for sc.Scan() {
		s.add(sc.Bytes())
	}
	code := s.finish()
	return out.String(), code
}

func TestSummary(t *testing.T) {
	out, code := summarize(t, stream)
	if code != 1 {
		t.Errorf("exit code %d with a failed package, want 1", code)
	}
	want := "ok  \tgithub.com/crossdock/crossdock/plugins/pgcdc\t0.5s\n" +
		"    agent_test.go:9: want 2, got 3\n    handler.go:322: time=2026-12-05T20:39:04Z level=ERROR msg=\"a log record\"\n" +
		"--- FAIL: TestBroken (0.00s)\nFAIL\nFAIL\tgithub.com/crossdock/crossdock/agent\t0.1s\n" +
		"failed:\n  FAIL agent: TestBroken\n    TestBroken: agent_test.go:9: want 2, got 3\n" +
		"!!! 1 INTEGRATION TESTS NOT RUN (PostgreSQL not available; install them, see .ci/run, or set CROSSDOCK_REQUIRE_INTEGRATION=1 to make this a failure): plugins/pgcdc.TestSlot\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}

	// Only the passing package: exit 0, and the summary still names the skip.
	passing := stream[:strings.Index(stream, `{"Action":"run","Package":"github.com/crossdock/crossdock/agent"`)]
	out, code = summarize(t, passing)
	if code != 0 || !strings.Contains(out, "!!! 1 INTEGRATION TESTS NOT RUN") {
		t.Errorf("passing run: exit %d, output:\n%s", code, out)
	}

	// Nothing skipped.
	out, code = summarize(t, `{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}`+"\n"+`{"Action":"pass","Package":"p"}`)
	if code != 0 || out != "ok  \tp\t0.1s\nintegration tests: none skipped\n" {
		t.Errorf("clean run: exit %d, output %q", code, out)
	}

	// A package without test files is reported as go test reports it, and passes.
	out, code = summarize(t, `{"Action":"start","Package":"r"}
{"Action":"output","Package":"r","Output":"?   \tr\t[no test files]\n"}
{"Action":"skip","Package":"r","Elapsed":0}`)
	if code != 0 || out != "?   \tr\t[no test files]\nintegration tests: none skipped\n" {
		t.Errorf("package without tests: exit %d, output %q", code, out)
	}

	// A build failure and a binary that ended without a result both fail.
	out, code = summarize(t, `{"ImportPath":"p [p.test]","Action":"build-output","Output":"p/x.go:1: syntax error\n"}
{"ImportPath":"p [p.test]","Action":"build-fail"}
{"Action":"output","Package":"p","Output":"FAIL\tp [build failed]\n"}
{"Action":"fail","Package":"p","FailedBuild":"p [p.test]"}`)
	if code != 1 || !strings.Contains(out, "syntax error") || !strings.Contains(out, "[build failed]") {
		t.Errorf("build failure: exit %d, output:\n%s", code, out)
	}
	out, code = summarize(t, `{"Action":"run","Package":"q","Test":"TestHang"}
{"Action":"output","Package":"q","Test":"TestHang","Output":"panic: test timed out\n"}`)
	if code != 1 || !strings.Contains(out, "panic: test timed out") || !strings.Contains(out, "no result") {
		t.Errorf("ended early: exit %d, output:\n%s", code, out)
	}
}

// TestTimeoutRecap checks a package that timed out is named again at the end with the
// tests that were running, after its goroutine dump.
func TestTimeoutRecap(t *testing.T) {
	const pkg = "github.com/crossdock/crossdock/controlplane/partner"
	var b strings.Builder
	emit := func(test, text string) {
		fmt.Fprintf(&b, `{"Action":"output","Package":%q,"Test":%q,"Output":%q}`+"\n", pkg, test, text)
	}
	emit("TestHang", "=== RUN   TestHang\n")
	emit("TestHang", "panic: test timed out after 20m0s\n")
	emit("TestHang", "\trunning tests:\n")
	emit("TestHang", "running tests:\n")
	emit("TestHang", "\tTestHang (19m59s)\n")
	emit("TestHang", "\n")
	for i := range 200 {
		emit("TestHang", fmt.Sprintf("goroutine %d [select]:\n", i))
	}
	fmt.Fprintf(&b, `{"Action":"fail","Package":%q,"Test":"TestHang"}`+"\n", pkg)
	emit("", "FAIL\tgithub.com/crossdock/crossdock/controlplane/partner\t1200.152s\n")
	fmt.Fprintf(&b, `{"Action":"fail","Package":%q}`+"\n", pkg)

	out, code := summarize(t, b.String())
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	want := "failed:\n  FAIL controlplane/partner: TestHang\n    panic: test timed out after 20m0s\n    running: TestHang (19m59s)\nintegration tests: none skipped\n"
	if !strings.HasSuffix(out, want) {
		t.Errorf("output ends:\n%s\nwant it to end:\n%s", out[max(0, len(out)-300):], want)
	}
}

// TestCompact checks the lines of passed tests are dropped from a long package run
// while a failed test's lines are kept.
func TestCompact(t *testing.T) {
	var b strings.Builder
	for i := range 3 * compactAt {
		fmt.Fprintf(&b, `{"Action":"output","Package":"p","Test":"TestOK%d","Output":"line\n"}`+"\n", i)
		fmt.Fprintf(&b, `{"Action":"pass","Package":"p","Test":"TestOK%d"}`+"\n", i)
	}
	b.WriteString(`{"Action":"output","Package":"p","Test":"TestBad","Output":"bad line\n"}` + "\n")
	b.WriteString(`{"Action":"fail","Package":"p","Test":"TestBad"}` + "\n")
	var out strings.Builder
	s := newSummary(&out)
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		s.add(sc.Bytes())
	}
	if n := len(s.pkgs["p"].lines); n >= compactAt+1 {
		t.Fatalf("%d lines buffered after compaction", n)
	}
	s.add([]byte(`{"Action":"fail","Package":"p"}`))
	if got := out.String(); got != "bad line\n" {
		t.Fatalf("output %q, want the failed test's line only", got)
	}
}
