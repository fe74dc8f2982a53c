package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// TestReleasesPushFollowsLeader: `releases push` through a CLI config naming a follower
// is made again to the leader the follower names (a streamed upload cannot be resent
// by the client's redirect), and `releases ls` lists it.
func TestReleasesPushFollowsLeader(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	cfg, err := cliconfig.Load(c.Nodes[0].AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n != leader {
			cfg.Addr, cfg.Addrs = n.Addr(), nil
			break
		}
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath, bin := filepath.Join(dir, "follower.yaml"), filepath.Join(dir, "agent-build")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte(strings.Repeat("a build ", 300_000)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "releases", "push", bin, "--version", "v3", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "release v3 linux/amd64 pushed: 2400000 bytes") {
		t.Errorf("releases push printed %q", out)
	}
	out, err = run(t, "releases", "ls", "--config", cfgPath, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res adminv1.ListReleasesResponse
	if err := protojson.Unmarshal([]byte(out), &res); err != nil || len(res.GetReleases()) != 1 || res.GetReleases()[0].GetNodeId() != leader.Config.NodeID {
		t.Fatalf("releases ls: %v %s", err, out)
	}
}
