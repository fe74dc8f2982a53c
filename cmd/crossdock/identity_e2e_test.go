package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// clusterIDOf reads the cluster id `crossdock cluster peers -o json` shows.
func clusterIDOf(t *testing.T, config string) string {
	t.Helper()
	out, err := run(t, "cluster", "peers", "--config", config, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st adminv1.GetClusterStatusResponse
	if err := protojson.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster peers -o json: %v\n%s", err, out)
	}
	if !strings.HasPrefix(st.GetClusterId(), "cl_") {
		t.Fatalf("cluster peers shows cluster id %q\n%s", st.GetClusterId(), out)
	}
	return st.GetClusterId()
}

// TestSnapshotRestoreOtherClusterCLI: `snapshot restore` of another cluster's backup is
// refused with both ids; `--force` installs it.
func TestSnapshotRestoreOtherClusterCLI(t *testing.T) {
	live, other := startServer(t), startServer(t)
	liveID, otherID := clusterIDOf(t, live.config), clusterIDOf(t, other.config)
	backup := filepath.Join(t.TempDir(), "other.snap")
	if _, err := run(t, "snapshot", "save", "--config", other.config, backup); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "snapshot", "restore", "--config", live.config, backup)
	if err == nil {
		t.Fatal("snapshot restore of another cluster's backup succeeded")
	}
	for _, want := range []string{liveID, otherID, "--force", "failed_precondition"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("snapshot restore of another cluster's backup: %v\nwant it to name %q", err, want)
		}
	}
	if got := clusterIDOf(t, live.config); got != liveID {
		t.Fatalf("cluster id %s after a refused restore, want %s", got, liveID)
	}
	if _, err := run(t, "snapshot", "restore", "--force", "--config", live.config, backup); err != nil {
		t.Fatalf("snapshot restore --force: %v", err)
	}
	// The backup's admin token replaced the live one.
	if _, err := run(t, "cluster", "peers", "--config", live.config); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("the live admin config after a forced restore: %v, want unauthenticated", err)
	}
}

// TestTokenKindRootCLI: an unknown token kind is refused by the CLI, listing the kinds.
func TestTokenKindRootCLI(t *testing.T) {
	_, err := run(t, "token", "create", "--kind", "root", "--config", filepath.Join(t.TempDir(), "none.yaml"))
	if err == nil || !strings.Contains(err.Error(), `--kind "root" is not a token kind`) || !strings.Contains(err.Error(), "agent") || !strings.Contains(err.Error(), "server") {
		t.Fatalf("token create --kind root: %v", err)
	}
}

// runServerUntilExit runs `crossdock server` that must refuse to start, with a deadline.
func runServerUntilExit(t *testing.T, args ...string) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"server", "--write-cli-config=false", "--metrics-listen", ""}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(begin)
	if ctx.Err() != nil {
		t.Fatalf("crossdock server %s still running after %s (a hang)\n%s", strings.Join(args, " "), took, out)
	}
	if err == nil {
		t.Fatalf("crossdock server %s exited 0\n%s", strings.Join(args, " "), out)
	}
	return string(out), took
}

// TestServerDataDirIdentityCLI: a data dir started with another --node-id, or copied
// and started at other addresses, is refused at once with a message that says why.
func TestServerDataDirIdentityCLI(t *testing.T) {
	c := startServer(t)
	c.proc.kill()
	newAddrs := func() []string {
		return []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--raft-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	}

	out, took := runServerUntilExit(t, append([]string{"--data-dir", c.dataDir, "--node-id", "cp2"}, newAddrs()...)...)
	if !strings.Contains(out, `belongs to node "cp1"`) || !strings.Contains(out, `--node-id "cp2"`) || took > 10*time.Second {
		t.Fatalf("data dir of cp1 started as cp2 (%s):\n%s", took, out)
	}

	copied := t.TempDir()
	if out, err := exec.Command("cp", "-a", c.dataDir+"/.", copied).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	out, took = runServerUntilExit(t, append([]string{"--data-dir", copied, "--node-id", "cp1"}, newAddrs()...)...)
	if !strings.Contains(out, "must never run as a second node") || !strings.Contains(out, c.addr) || !strings.Contains(out, "--i-moved-this-node") || took > 10*time.Second {
		t.Fatalf("copied data dir started at other addresses (%s):\n%s", took, out)
	}
}
