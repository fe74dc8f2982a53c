package console_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/protocol"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// On a follower, GetTimeline answers unavailable naming the leader (whose attempt log
// it needs; the CLI's client follows), and the console serves its pages from the
// replica with a note linking to the leader's console.
func TestFollowerTimelineAndConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.WaitLeader(nil)
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	cc, err := cliconfig.Load(c.Nodes[0].AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc := browserless(t, cc.CAPEM)
	hc.Transport = cliconfig.Bearer{Token: cc.Token, Next: hc.Transport}
	req := connect.NewRequest(&adminv1.GetTimelineRequest{Keys: map[string]string{"sku": "A-100"}})
	_, err = adminv1connect.NewTimelineServiceClient(hc, "https://"+follower.Addr()).GetTimeline(context.Background(), req)
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeUnavailable || cerr.Meta().Get(protocol.LeaderHeader) != leader.Addr() {
		t.Fatalf("follower: %v, want unavailable naming the leader %s", err, leader.Addr())
	}
	fc, base, closeFn, err := (&cliconfig.Config{Addr: follower.Addr(), Token: cc.Token, CAPEM: cc.CAPEM}).HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	res, err := adminv1connect.NewTimelineServiceClient(fc, base).GetTimeline(context.Background(), req)
	if err != nil || res.Msg.GetNode() != leader.Config.NodeID || !res.Msg.GetLeader() {
		t.Fatalf("the CLI's client from the follower: %v %v, want the leader's answer", res, err)
	}

	for _, path := range []string{"/ui/fleet", "/ui/search?q=sku%3DA-100"} {
		p := do(t, browserless(t, cc.CAPEM), http.MethodGet, "https://"+follower.Addr()+path, nil, map[string]string{"Authorization": "Bearer " + cc.Token})
		if p.status != http.StatusOK || !strings.Contains(p.body, `id="follower"`) || !strings.Contains(p.body, "https://"+leader.Addr()+"/ui/") {
			t.Errorf("%s on the follower: %d, want the page with the follower note linking to the leader's console:\n%.600s", path, p.status, p.body)
		}
	}
}
