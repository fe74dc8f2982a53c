package routing_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func webhookDoc(url string) string {
	return fmt.Sprintf("apiVersion: crossdock.io/v1\nkind: Destination\nmetadata: {name: d}\nspec: {type: webhook, url: %q, secret: %s}\n", url, webhookSecret)
}

// Applying a webhook Destination whose URL is a non-public address, or a name that
// obviously is one, is refused with the field path and how to allow it; a public target
// is accepted. Rollback to such a version is refused the same way.
func TestApplyRefusesNonPublicWebhookTargets(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	c := client(t, srv.AdminConfigPath(), "")
	const hint = "webhooks reach only public addresses unless every control plane node is started with --webhook-allow "
	for _, tc := range []struct{ url, want string }{
		{"https://169.254.169.254/latest/meta-data/", "blocked: 169.254.169.254 is a link-local address; " + hint + "169.254.169.254/32"},
		{"https://[fe80::1]/", "blocked: fe80::1 is a link-local address; " + hint + "fe80::1/128"},
		{"http://127.0.0.1:7480/crossdock.agent.v1.AgentService/Publish", "blocked: 127.0.0.1 is a loopback address; " + hint + "127.0.0.1/32"},
		{"https://127.8.9.10/", "blocked: 127.8.9.10 is a loopback address"},
		{"http://[::1]:8080/", "blocked: ::1 is a loopback address; " + hint + "::1/128"},
		{"http://localhost:9000/", "blocked: localhost is a loopback name; " + hint + "127.0.0.1/32"},
		{"https://10.1.2.3/", "blocked: 10.1.2.3 is a private address"},
		{"https://172.16.5.4/", "blocked: 172.16.5.4 is a private address"},
		{"https://192.168.1.10/", "blocked: 192.168.1.10 is a private address"},
		{"https://[fd00::5]/", "blocked: fd00::5 is a private address"},
		{"https://100.64.1.1/", "blocked: 100.64.1.1 is a shared (carrier-grade NAT) address"},
		{"https://0.0.0.0/", "blocked: 0.0.0.0 is an unspecified address"},
		{"https://[::]/", "blocked: :: is an unspecified address"},
		{"https://[::ffff:169.254.169.254]/", "blocked: 169.254.169.254 is a link-local address"},
		{"https://[::ffff:10.0.0.1]/", "blocked: 10.0.0.1 is a private address"},
		{"https://metadata.google.internal/", "blocked: metadata.google.internal is a site-internal name (.internal)"},
		{"https://2130706433/", `host "2130706433" is a number, not a name`},
	} {
		_, err := apply(t, c, webhookDoc(tc.url), false)
		wantCode(t, err, connect.CodeInvalidArgument, "destinations/d: spec.url: "+tc.want)
	}
	if names := listNames(t, c, "destination"); len(names) != 0 {
		t.Fatalf("refused destinations were stored: %v", names)
	}
	if _, err := apply(t, c, webhookDoc("https://hooks.example.com/in"), false); err != nil {
		t.Fatalf("a public target was refused: %v", err)
	}
	if _, err := apply(t, c, webhookDoc("https://93.184.215.14/in"), true); err != nil {
		t.Fatalf("a public address was refused: %v", err)
	}
}

// With --webhook-allow 10.20.0.0/16 that range is accepted, and only it.
func TestApplyWebhookAllowList(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(cfg *controlplane.Config) {
		cfg.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}
	})
	c := client(t, srv.AdminConfigPath(), "")
	if _, err := apply(t, c, webhookDoc("https://10.20.30.40/in"), false); err != nil {
		t.Fatalf("an allowed address was refused: %v", err)
	}
	if _, err := apply(t, c, webhookDoc("https://erp.corp.internal/in"), true); err != nil {
		t.Fatalf("an internal name was refused with an allow-list set: %v", err)
	}
	for _, url := range []string{"https://10.21.0.1/", "https://10.19.255.255/", "http://127.0.0.1:7480/", "https://169.254.169.254/", "http://localhost:1/"} {
		_, err := apply(t, c, webhookDoc(url), true)
		wantCode(t, err, connect.CodeInvalidArgument, "destinations/d: spec.url: blocked: ")
	}
	// Rollback to a version the policy refuses is refused like an apply: version 1 on
	// another node's allow-list is simulated by storing it here and restarting without.
	if _, err := apply(t, c, webhookDoc("https://hooks.example.com/in"), false); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv2 := controlplanetest.TestServer(t, func(cfg *controlplane.Config) { *cfg = srv.Config; cfg.WebhookAllow = nil })
	c2 := client(t, srv2.AdminConfigPath(), "")
	_, err := c2.Rollback(context.Background(), connect.NewRequest(&routingv1.RollbackRequest{Kind: "destination", Name: "d", ToVersion: 1}))
	wantCode(t, err, connect.CodeInvalidArgument, "destinations/d: spec.url: blocked: 10.20.30.40 is a private address")
}
