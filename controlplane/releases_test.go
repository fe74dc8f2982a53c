package controlplane_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// TestReleasesReachEveryNode: a release pushed to the leader is copied by every other
// node, checked, into its own data dir, so a new leader serves it to agents.
func TestReleasesReachEveryNode(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.Leader()
	cfg, err := cliconfig.Load(c.Nodes[0].AdminConfigPath()) // the bootstrap node wrote it
	if err != nil {
		t.Fatal(err)
	}
	hc, _, closeFn, err := cfg.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	fleet := adminv1connect.NewFleetServiceClient(hc, "https://"+leader.Addr())
	data := bytes.Repeat([]byte("crossdock build "), 200_000) // 3.2 MB: several chunks
	stream := fleet.PushRelease(context.Background())
	head := &adminv1.PushReleaseRequest{Version: "v7", Os: runtime.GOOS, Arch: runtime.GOARCH, Size: int64(len(data))}
	for i := 0; i < len(data); i += 1 << 20 {
		m := &adminv1.PushReleaseRequest{Data: data[i:min(i+1<<20, len(data))]}
		if i == 0 {
			head.Data, m = m.Data, head
		}
		if err := stream.Send(m); err != nil {
			break
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		t.Fatal(err)
	}
	sum := res.Msg.GetRelease().GetSha256()
	for _, n := range c.Nodes {
		path := filepath.Join(n.Config.DataDir, "releases", sum)
		controlplanetest.WaitFor(t, 30*time.Second, "the release on node "+n.Config.NodeID, func() bool {
			b, err := os.ReadFile(path)
			return err == nil && bytes.Equal(b, data)
		})
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v; want mode 0600", path, st.Mode(), err)
		}
	}
	var rs *connect.Response[adminv1.ListReleasesResponse]
	controlplanetest.WaitFor(t, 30*time.Second, "releases ls (a leader)", func() bool {
		rs, err = fleet.ListReleases(context.Background(), connect.NewRequest(&adminv1.ListReleasesRequest{}))
		return err == nil
	})
	if len(rs.Msg.GetReleases()) != 1 || rs.Msg.GetReleases()[0].GetNodeId() != leader.Config.NodeID {
		t.Fatalf("releases ls: %v", rs.Msg)
	}
}
