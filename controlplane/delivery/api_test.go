package delivery_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/protocol"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
)

// DeliveryService on a follower answers Unavailable naming the leader (the CLI's client
// follows it), and refuses a call without the admin token.
func TestDeliveryAPILeaderRedirectAndAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node cluster")
	}
	c := controlplanetest.TestCluster(t, 3, nil)
	leader := c.WaitLeader(nil)
	var follower *controlplanetest.Server
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
		}
	}
	cc, err := cliconfig.Load(c.Nodes[0].AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cc.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	ctx := context.Background()
	req := func() *connect.Request[deliveryv1.GetDeliveryStatusRequest] {
		return connect.NewRequest(&deliveryv1.GetDeliveryStatusRequest{})
	}

	raw := deliveryv1connect.NewDeliveryServiceClient(&http.Client{Transport: cliconfig.Bearer{Token: cc.Token, Next: tr}}, "https://"+follower.Addr())
	_, err = raw.GetDeliveryStatus(ctx, req())
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeUnavailable || cerr.Meta().Get(protocol.LeaderHeader) != leader.Addr() {
		t.Fatalf("follower answered %v, want unavailable with the leader %s", err, leader.Addr())
	}

	hc, base, closeFn, err := (&cliconfig.Config{Addr: follower.Addr(), Token: cc.Token, CAPEM: cc.CAPEM}).HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	if _, err := deliveryv1connect.NewDeliveryServiceClient(hc, base).GetDeliveryStatus(ctx, req()); err != nil {
		t.Fatalf("the CLI's client did not reach the leader: %v", err)
	}

	anon := deliveryv1connect.NewDeliveryServiceClient(&http.Client{Transport: tr}, "https://"+leader.Addr())
	if _, err := anon.ListDeadLetters(ctx, connect.NewRequest(&deliveryv1.ListDeadLettersRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("call without a token: %v, want unauthenticated", err)
	}
	if _, err := raw.RetryDeadLetters(ctx, connect.NewRequest(&deliveryv1.RetryDeadLettersRequest{All: true})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("retry --all without a destination: %v, want invalid_argument", err)
	}
}
