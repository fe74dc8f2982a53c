package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

func newAgent(t *testing.T, srv *controlplanetest.Server, dir, token string, mod ...func(*agent.Config)) (*agent.Agent, error) {
	t.Helper()
	cfg := agent.Config{
		DataDir: dir, Servers: []string{srv.Addr()}, EnrollToken: token, LocalAddr: "-",
		Logger: controlplanetest.Logger(t),
	}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return agent.New(ctx, cfg)
}

func run(t *testing.T, a *agent.Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func inventory(sku string, onHand int) *eventv1.Event {
	return &eventv1.Event{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
		Sku: sku, Location: "WH1", OnHand: fmt.Sprint(onHand),
	}}}
}

func TestEnrollment(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)

	t.Run("good token, then mTLS streaming", func(t *testing.T) {
		a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "wh-east"))
		if err != nil {
			t.Fatalf("enroll: %v", err)
		}
		if a.ID() != "wh-east" {
			t.Fatalf("agent id %q, want the token's wh-east", a.ID())
		}
		run(t, a)
		if _, err := a.Publish(context.Background(), "", []*eventv1.Event{inventory("A-1", 5), inventory("A-2", 7)}); err != nil {
			t.Fatal(err)
		}
		controlplanetest.WaitFor(t, 20*time.Second, "events committed", func() bool { return srv.Store().Ledger().LastSeq() == 2 })
	})

	t.Run("reused token", func(t *testing.T) {
		tok := srv.Token(t, time.Minute, "")
		if _, err := newAgent(t, srv, t.TempDir(), tok, func(c *agent.Config) { c.Name = "first" }); err != nil {
			t.Fatalf("first use: %v", err)
		}
		_, err := newAgent(t, srv, t.TempDir(), tok, func(c *agent.Config) { c.Name = "second" })
		if err == nil || !strings.Contains(err.Error(), "already used by agent first") {
			t.Fatalf("reused token: got %v, want 'already used by agent first'", err)
		}
	})

	t.Run("expired token", func(t *testing.T) {
		res, err := srv.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(time.Millisecond)}))
		if err != nil {
			t.Fatal(err)
		}
		exp := res.Msg.GetExpiresAt().AsTime()
		controlplanetest.WaitFor(t, 5*time.Second, "token expiry", func() bool { return time.Now().After(exp) })
		_, err = newAgent(t, srv, t.TempDir(), res.Msg.GetToken())
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired token: got %v", err)
		}
	})

	t.Run("forged token", func(t *testing.T) {
		tok, err := pki.NewToken(srv.CA().Pin())
		if err != nil {
			t.Fatal(err)
		}
		_, err = newAgent(t, srv, t.TempDir(), tok.String())
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("forged token: got %v", err)
		}
		real, err := pki.ParseToken(srv.Token(t, time.Minute, ""))
		if err != nil {
			t.Fatal(err)
		}
		real.Secret = tok.Secret
		_, err = newAgent(t, srv, t.TempDir(), real.String())
		if err == nil || !strings.Contains(err.Error(), "secret does not match") {
			t.Fatalf("token with a wrong secret: got %v", err)
		}
	})

	t.Run("wrong CA pin", func(t *testing.T) {
		other := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.NodeID = "other" })
		tok := other.Token(t, time.Minute, "")
		_, err := newAgent(t, srv, t.TempDir(), tok)
		if err == nil || !errors.Is(err, pki.ErrPinMismatch) && !strings.Contains(err.Error(), "does not match the CA pin") {
			t.Fatalf("token pinned to another CA: got %v", err)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(srv.CA().Cert())
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
		client := uplinkv1connect.NewUplinkServiceClient(hc, "https://"+srv.Addr())
		stream := client.Stream(context.Background())
		_ = stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Hello{Hello: &uplinkv1.Hello{}}})
		_, err := stream.Receive()
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), "client certificate required") {
			t.Fatalf("stream without a certificate: got %v", err)
		}
	})

	t.Run("not enrolled and no token", func(t *testing.T) {
		_, err := newAgent(t, srv, t.TempDir(), "")
		if !errors.Is(err, agent.ErrNotEnrolled) {
			t.Fatalf("got %v, want ErrNotEnrolled", err)
		}
	})
}

// TestPublishValidation checks bad events are refused with the field named, and that
// publishing the same events twice gives the same ids.
func TestPublishValidation(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "a1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Publish(context.Background(), "", []*eventv1.Event{inventory("A-1", 1), {Type: "inventory.level"}})
	if err == nil || !strings.Contains(err.Error(), "events[1]") || !strings.Contains(err.Error(), "payload") {
		t.Fatalf("got %v", err)
	}
	if st := a.Status(); st.GetOutbox().GetLastSeq() != 0 {
		t.Fatalf("a refused publish wrote %d events", st.GetOutbox().GetLastSeq())
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e1, e2 := inventory("A-1", 3), inventory("A-1", 3)
	e1.OccurredAt, e2.OccurredAt = timestamppb.New(at), timestamppb.New(at)
	r1, err := a.Publish(context.Background(), "", []*eventv1.Event{e1})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.Publish(context.Background(), "", []*eventv1.Event{e2})
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetIds()[0] != r2.GetIds()[0] {
		t.Fatalf("same event published twice got ids %s and %s", r1.GetIds()[0], r2.GetIds()[0])
	}

	// An event just under the size limit as given, over it once the agent adds its
	// source and id: refused here, since the control plane would refuse it and stop
	// the uplink at that point of the outbox.
	big := inventory("A-1", 1)
	canonical.Normalize(big)
	big.GetInventoryLevel().UnitOfMeasure = strings.Repeat("x", canonical.MaxEventBytes-proto.Size(big)-16)
	if err := canonical.Validate(big); err != nil {
		t.Fatalf("the event as given should be valid: %v", err)
	}
	before := a.Status().GetOutbox().GetLastSeq()
	if _, err := a.Publish(context.Background(), "", []*eventv1.Event{big}); !errors.Is(err, canonical.ErrInvalid) || !strings.Contains(err.Error(), "bytes, more than") {
		t.Fatalf("event over the limit with its source and id: %v, want a size refusal", err)
	}
	if got := a.Status().GetOutbox().GetLastSeq(); got != before {
		t.Fatalf("a refused publish wrote %d events", got-before)
	}
}

// TestFallsBackToHTTP2 runs a control plane without HTTP/3: the agent's QUIC handshake
// gets no answer, and it must carry on over HTTP/2 by itself.
func TestFallsBackToHTTP2(t *testing.T) {
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.DisableHTTP3 = true })
	a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "tcp-only"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	if _, err := a.Publish(context.Background(), "", []*eventv1.Event{inventory("B-1", 1)}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "event committed over HTTP/2", func() bool { return srv.Store().Ledger().LastSeq() == 1 })
	if st := a.Status(); st.GetTransport() != "h2" || st.GetUplinkState() != "connected" {
		t.Fatalf("status = %v, want connected over h2", st)
	}
}

// TestQuotaBlocksPublish fills a tiny outbox while the control plane is down: publish
// blocks with a clear status, then fails with resource exhausted; nothing is dropped,
// and once the control plane is back everything drains.
func TestQuotaBlocksPublish(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	dir := t.TempDir()
	a, err := newAgent(t, srv, dir, srv.Token(t, time.Minute, "small"), func(c *agent.Config) { c.QuotaBytes = 4 << 10 })
	if err != nil {
		t.Fatal(err)
	}
	// Not running the uplink: the agent is offline.
	var published int
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := a.Publish(ctx, "", []*eventv1.Event{inventory(fmt.Sprintf("Q-%d", published), published)})
		cancel()
		if err != nil {
			if !errors.Is(err, outbox.ErrQuotaFull) {
				t.Fatalf("publish into a full outbox: %v, want ErrQuotaFull", err)
			}
			break
		}
		published++
	}
	// One more publish waits, and the status says why.
	ctx, cancel := context.WithCancel(context.Background())
	blocked := make(chan error, 1)
	go func() {
		_, err := a.Publish(ctx, "", []*eventv1.Event{inventory("Q-last", 1)})
		blocked <- err
	}()
	controlplanetest.WaitFor(t, 10*time.Second, "status to show the outbox is full", func() bool {
		ob := a.Status().GetOutbox()
		return ob.GetBlocked() && strings.Contains(ob.GetBlockedReason(), "outbox full")
	})
	cancel()
	if err := <-blocked; !errors.Is(err, outbox.ErrQuotaFull) {
		t.Fatalf("blocked publish ended with %v, want ErrQuotaFull", err)
	}
	st := a.Status().GetOutbox()
	if st.GetPendingEvents() != uint64(published) {
		t.Fatalf("outbox holds %d events, %d were acknowledged", st.GetPendingEvents(), published)
	}
	run(t, a)
	controlplanetest.WaitFor(t, 30*time.Second, "backlog drained", func() bool {
		return srv.Store().Ledger().LastSeq() == uint64(published) && a.Status().GetOutbox().GetPendingEvents() == 0
	})
}
