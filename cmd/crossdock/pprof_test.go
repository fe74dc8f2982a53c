package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
)

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:0", "127.0.0.2:1"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.0.0.1:6060", "example.com:6060", "127.0.0.1", "127.0.0.1:http-nope", ""} {
		if err := checkLoopback(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzCheckLoopback: an accepted address always names a loopback host.
func FuzzCheckLoopback(f *testing.F) {
	for _, s := range []string{"127.0.0.1:6060", "[::1]:0", "localhost:6060", ":6060", "0.0.0.0:1", "[::ffff:127.0.0.1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if checkLoopback(addr) != nil {
			return
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%q accepted but does not split: %v", addr, err)
		}
		if strings.EqualFold(host, "localhost") {
			return
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			t.Fatalf("%q accepted with a host that is not loopback", addr)
		}
	})
}

// TestServePprof: the listener serves the heap profile, with the runtime's figures
// the benchmarks read, and stops with its context.
func TestServePprof(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := servePprof(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(b), "# HeapAlloc = ") {
		t.Fatalf("heap profile: %s\n%.300s", res.Status, b)
	}
	cancel()
	controlplanetest.WaitFor(t, 10*time.Second, "the pprof listener to close", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := servePprof(context.Background(), "0.0.0.0:0", nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("0.0.0.0: got %v, want a refusal", err)
	}
}

// TestServerMemoryFlags runs the binary: --pprof-listen serves profiles of the server;
// --ledger-cache, which sized a block cache the ledger no longer has, is still accepted
// with a warning, so that existing unit files start; and --pprof-listen,
// --prune-step-events and raft log byte bound values that would be unsafe are refused
// before anything starts.
func TestServerMemoryFlags(t *testing.T) {
	pp := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := startServer(t, "--pprof-listen", pp, "--ledger-cache", "32MiB", "--memory-limit", "512MiB",
		"--raft-snapshot-threshold", "1000", "--raft-trailing-logs", "2000", "--raft-snapshot-interval", "30s",
		"--raft-trailing-bytes", "64MiB", "--raft-snapshot-bytes", "0")
	res, err := http.Get("http://" + pp + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "server") {
		t.Fatalf("pprof cmdline of the server: %q", b)
	}
	if log, _ := os.ReadFile(c.proc.log); !strings.Contains(string(log), "--ledger-cache has been deprecated") {
		t.Errorf("server log does not warn that --ledger-cache is ignored:\n%s", tail(log, 2048))
	}
	for _, tc := range []struct{ flag, value, want string }{
		{"--pprof-listen", "0.0.0.0:6060", "loopback"},
		{"--memory-limit", "x", "--memory-limit"},
		{"--prune-step-events", "0", "between 1 and"},
		{"--prune-step-events", "100001", "between 1 and"},
		{"--raft-trailing-bytes", "-1MiB", "--raft-trailing-bytes"},
		{"--raft-snapshot-bytes", "lots", "--raft-snapshot-bytes"},
	} {
		_, err := run(t, "server", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0", "--write-cli-config=false", tc.flag, tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: got %v, want an error containing %q", tc.flag, tc.value, err, tc.want)
		}
	}
}
