package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/canonical"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// level is an inventory level at a source position chosen by the caller.
func level(sku, position string, onHand int) *eventv1.Event {
	ev := inventory(sku, onHand)
	ev.Source = &eventv1.Source{Position: position}
	return ev
}

func enrolled(t *testing.T, srv *controlplanetest.Server, name string, mod ...func(*agent.Config)) (*agent.Agent, string) {
	t.Helper()
	dir := t.TempDir()
	a, err := newAgent(t, srv, dir, srv.Token(t, time.Minute, name), mod...)
	if err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	return a, dir
}

func publish(t *testing.T, a *agent.Agent, connector string, evs ...*eventv1.Event) {
	t.Helper()
	if _, err := a.Publish(context.Background(), connector, evs); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func describe(t *testing.T, srv *controlplanetest.Server, id string) *adminv1.Agent {
	t.Helper()
	res, err := srv.Admin.DescribeAgent(context.Background(), connect.NewRequest(&adminv1.DescribeAgentRequest{Id: id}))
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	return res.Msg.GetAgent()
}

// TestIDsScopedByAgent: an agent publishing an event with the id another agent's
// change will get cannot make that change a duplicate: each agent's ids are its own.
func TestIDsScopedByAgent(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, _ := enrolled(t, srv, "agent-a")
	b, _ := enrolled(t, srv, "agent-b")
	run(t, a)
	run(t, b)
	stolen := canonical.ID("agent-b", "wms", "row-42")
	forged := inventory("SKU-1", 1)
	forged.Id = stolen
	publish(t, a, "", forged)
	controlplanetest.WaitFor(t, 20*time.Second, "agent-a's event committed", func() bool { return srv.Store().Ledger().LastSeq() == 1 })
	publish(t, b, "wms", level("SKU-1", "row-42", 7))
	controlplanetest.WaitFor(t, 20*time.Second, "agent-b's change committed", func() bool { return srv.Store().Ledger().LastSeq() == 2 })
	ev, ok, err := srv.Store().Ledger().AgentEventByID("agent-b", stolen)
	if err != nil || !ok || ev.GetEvent().GetInventoryLevel().GetOnHand() != "7" {
		t.Fatalf("agent-b's row-42 = %v, %v, %v; want committed with onHand 7", ev, ok, err)
	}
	if d := describe(t, srv, "agent-b"); d.GetDuplicates() != 0 || d.GetEventsCommitted() != 1 {
		t.Errorf("agent-b = %v; want 1 committed, 0 duplicates", d)
	}
}

// TestIDConflicts: a change published again at the same position with other content is
// refused at publish when the agent remembers the first one, and otherwise reported by
// the control plane (agent status and agents describe), never dropped silently. The
// same content again is a harmless duplicate.
func TestIDConflicts(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, dir := enrolled(t, srv, "wh-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	publish(t, a, "wms", level("SKU-1", "row-42", 1))
	publish(t, a, "wms", level("SKU-1", "row-42", 1)) // the same change again: fine
	_, err := a.Publish(context.Background(), "wms", []*eventv1.Event{level("SKU-1", "row-42", 999)})
	if !errors.Is(err, canonical.ErrIDConflict) || !strings.Contains(err.Error(), `inventoryLevel.onHand: "1" -> "999"`) ||
		!strings.Contains(err.Error(), canonical.ID("wh-1", "wms", "row-42")) {
		t.Fatalf("publish with other content = %v; want ErrIDConflict naming the id and onHand", err)
	}
	_, err = a.Publish(context.Background(), "wms", []*eventv1.Event{level("SKU-2", "row-7", 1), level("SKU-2", "row-7", 2)})
	if !errors.Is(err, canonical.ErrIDConflict) || !strings.Contains(err.Error(), "earlier in this call (events[0])") {
		t.Fatalf("one call with the same position twice = %v; want ErrIDConflict", err)
	}
	controlplanetest.WaitFor(t, 20*time.Second, "row-42 committed", func() bool { return srv.Store().Ledger().LastSeq() == 1 })
	cancel()
	<-done

	// A restarted agent does not remember: the control plane refuses and says so.
	a, err = newAgent(t, srv, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	publish(t, a, "wms", level("SKU-1", "row-42", 999), level("SKU-1", "row-43", 5))
	// The conflict must not stall the outbox: both events leave it.
	controlplanetest.WaitFor(t, 20*time.Second, "the conflict reported to the agent and its outbox drained", func() bool {
		st := a.Status()
		return st.GetConflicts() == 1 && st.GetOutbox().GetPendingEvents() == 0
	})
	st := a.Status()
	if c := st.GetRecentConflicts()[0]; c.GetConnector() != "wms" || c.GetPosition() != "row-42" || c.GetDiffers() != `inventoryLevel.onHand: "1" -> "999"` {
		t.Errorf("agent's conflict = %v", c)
	}
	d := describe(t, srv, "wh-1")
	if d.GetConflicts() != 1 || len(d.GetRecentConflicts()) != 1 || d.GetRecentConflicts()[0].GetExistingSeq() != 1 {
		t.Errorf("agents describe = %v; want the conflict with the seq holding the id", d)
	}
	if srv.Store().Ledger().LastSeq() != 2 {
		t.Errorf("ledger at seq %d; want row-42 once and row-43", srv.Store().Ledger().LastSeq())
	}
	ev, _, _ := srv.Store().Ledger().AgentEventByID("wh-1", canonical.ID("wh-1", "wms", "row-42"))
	if ev.GetEvent().GetInventoryLevel().GetOnHand() != "1" {
		t.Errorf("row-42 holds %v; the first content stands", ev.GetEvent())
	}
}

// TestReenrollment: enrolling a name again needs a replacing token; the new agent
// starts its own seq space (nothing it sends is taken for committed), and the old one,
// still running, is refused and keeps its events.
func TestReenrollment(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	old, _ := enrolled(t, srv, "erp-x")
	run(t, old)
	for i := range 5 {
		publish(t, old, "", inventory("OLD", i))
	}
	controlplanetest.WaitFor(t, 20*time.Second, "the old agent's events", func() bool { return srv.Store().Ledger().LastSeq() == 5 })

	if _, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "erp-x")); err == nil || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("enrolling an enrolled name without --replace = %v; want refused, naming --replace", err)
	}
	res, err := srv.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: "erp-x", Replace: true}))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := newAgent(t, srv, t.TempDir(), res.Msg.GetToken())
	if err != nil {
		t.Fatalf("replacing enrollment: %v", err)
	}
	// Before the new agent first streams, the old one (its certificate retired) must
	// not get in: it would take the new incarnation's seq space.
	controlplanetest.WaitFor(t, 20*time.Second, "the old agent refused", func() bool {
		return strings.Contains(old.Status().GetRefused(), "not one of agent erp-x's current certificates")
	})
	publish(t, old, "", inventory("OLD", 99))
	if st := old.Status(); st.GetOutbox().GetPendingEvents() != 1 {
		t.Errorf("old agent outbox = %v; its event must stay", st.GetOutbox())
	}
	run(t, fresh)
	for i := range 3 {
		publish(t, fresh, "", inventory("NEW", i))
	}
	controlplanetest.WaitFor(t, 20*time.Second, "the new agent's 3 events, with seqs 1-3 again", func() bool { return srv.Store().Ledger().LastSeq() == 8 })
	if d := describe(t, srv, "erp-x"); d.GetIncarnation() != 2 || d.GetCommittedSeq() != 3 || d.GetEventsCommitted() != 8 {
		t.Errorf("agent = %v; want incarnation 2 at seq 3, 8 events in all", d)
	}
	if srv.Store().Ledger().LastSeq() != 8 {
		t.Errorf("ledger at %d; the retired agent must not commit", srv.Store().Ledger().LastSeq())
	}
}

// TestCopiedIdentity: an identity copied next to a fresh outbox is refused (its seqs
// would be taken for committed ones), and a whole copied data dir (the same outbox)
// gets one stream at a time: the newer one wins, the older is told why.
func TestCopiedIdentity(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, dir := enrolled(t, srv, "site-1")
	run(t, a)
	publish(t, a, "", inventory("A", 1), inventory("A", 2))
	controlplanetest.WaitFor(t, 20*time.Second, "events committed", func() bool { return srv.Store().Ledger().LastSeq() == 2 })

	copyDir := t.TempDir()
	if err := os.CopyFS(filepath.Join(copyDir, "identity"), os.DirFS(filepath.Join(dir, "identity"))); err != nil {
		t.Fatal(err)
	}
	c, err := newAgent(t, srv, copyDir, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	for i := range 3 {
		publish(t, c, "", inventory("COPY", i))
	}
	controlplanetest.WaitFor(t, 20*time.Second, "the copy refused", func() bool {
		return strings.Contains(c.Status().GetRefused(), "another outbox")
	})
	if st := c.Status(); st.GetOutbox().GetPendingEvents() != 3 {
		t.Errorf("copy's outbox = %v; its events must stay", st.GetOutbox())
	}
	if srv.Store().Ledger().LastSeq() != 2 {
		t.Errorf("ledger at %d; nothing of the copy may commit", srv.Store().Ledger().LastSeq())
	}
}

// TestOneStreamPerAgent: a whole data dir copied (identity and outbox) and started
// beside the original gets one stream at a time: a newer stream ends the older one,
// which is told why.
func TestOneStreamPerAgent(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, dir := enrolled(t, srv, "site-2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	controlplanetest.WaitFor(t, 20*time.Second, "first agent connected", func() bool { return a.Status().GetUplinkState() == "connected" })
	cancel()
	<-done
	clone := t.TempDir()
	if err := os.CopyFS(clone, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(t, srv, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	controlplanetest.WaitFor(t, 20*time.Second, "original connected again", func() bool { return a.Status().GetUplinkState() == "connected" })
	b, err := newAgent(t, srv, clone, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, b)
	controlplanetest.WaitFor(t, 20*time.Second, "the first stream told it was superseded", func() bool {
		return strings.Contains(a.Status().GetLastError(), "newer stream of this agent identity")
	})
}

// TestRevoke: a revoked agent's stream closes at once, its events stay in its outbox,
// agents ls says revoked, and its name enrolls again only with a replacing token.
func TestRevoke(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, _ := enrolled(t, srv, "lost-laptop")
	run(t, a)
	publish(t, a, "", inventory("R", 1))
	controlplanetest.WaitFor(t, 20*time.Second, "event committed", func() bool { return srv.Store().Ledger().LastSeq() == 1 })
	if _, err := srv.Admin.RevokeAgent(context.Background(), connect.NewRequest(&adminv1.RevokeAgentRequest{Id: "lost-laptop", Reason: "stolen"})); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 10*time.Second, "the agent's stream closed and refused", func() bool {
		st := a.Status()
		return st.GetUplinkState() != "connected" && strings.Contains(st.GetRefused(), "revoked")
	})
	publish(t, a, "", inventory("R", 2))
	if st := a.Status(); st.GetOutbox().GetPendingEvents() != 1 {
		t.Errorf("outbox = %v; the event must stay", st.GetOutbox())
	}
	ls, err := srv.Admin.ListAgents(context.Background(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if ag := ls.Msg.GetAgents()[0]; !ag.GetRevoked() || ag.GetRevokedReason() != "stolen" || ag.GetConnected() {
		t.Errorf("agents ls = %v; want revoked, not connected", ag)
	}
	if _, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "lost-laptop")); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("enrolling a revoked name without --replace = %v; want refused", err)
	}
	if srv.Store().Ledger().LastSeq() != 1 {
		t.Errorf("ledger at %d after revocation", srv.Store().Ledger().LastSeq())
	}
}

// TestCertificateRenewal: with a short certificate lifetime the agent renews over its
// stream before expiry, and connects with the new certificate after the first one
// expired.
func TestCertificateRenewal(t *testing.T) {
	const ttl = 8 * time.Second
	srv := controlplanetest.TestServer(t, func(c *controlplane.Config) { c.AgentCertTTL = ttl })
	a, dir := enrolled(t, srv, "renewing", func(c *agent.Config) { c.RenewCheck = 200 * time.Millisecond })
	first := a.Status().GetCertNotAfter().AsTime()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	controlplanetest.WaitFor(t, 3*ttl, "a renewed certificate", func() bool {
		return a.Status().GetCertNotAfter().AsTime().After(first)
	})
	if d := describe(t, srv, "renewing"); !d.GetCertNotAfter().AsTime().After(first) {
		t.Errorf("agents describe cert expiry %v; want the renewed one after %v", d.GetCertNotAfter().AsTime(), first)
	}
	cancel()
	<-done
	controlplanetest.WaitFor(t, 2*ttl, "the first certificate expired", func() bool { return time.Now().After(first) })
	// A new process from the same data dir connects with the renewed certificate.
	b, err := newAgent(t, srv, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	run(t, b)
	publish(t, b, "", inventory("C", 1))
	controlplanetest.WaitFor(t, 20*time.Second, "event committed with the renewed certificate", func() bool { return srv.Store().Ledger().LastSeq() == 1 })
}

// TestStreamBehindCommittedRefused: a stream whose outbox ends below what the ledger
// committed for the agent (an outbox reset under the same instance, or a client that
// lost track) is refused before anything is acknowledged.
func TestStreamBehindCommittedRefused(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	a, dir := enrolled(t, srv, "behind")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for i := range 5 {
		publish(t, a, "", inventory("B", i))
	}
	controlplanetest.WaitFor(t, 20*time.Second, "events committed", func() bool { return srv.Store().Ledger().LastSeq() == 5 })
	cancel()
	<-done
	d := describe(t, srv, "behind")
	if d.GetOutboxInstance() == "" || d.GetCommittedSeq() != 5 {
		t.Fatalf("agent = %v; want bound to its outbox at seq 5", d)
	}
	id := filepath.Join(dir, "identity")
	cert, err := tls.LoadX509KeyPair(filepath.Join(id, "agent.crt"), filepath.Join(id, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(id, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	stream := uplinkv1connect.NewUplinkServiceClient(&http.Client{Transport: tr}, "https://"+srv.Addr()).Stream(context.Background())
	hello := &uplinkv1.Hello{OutboxInstance: d.GetOutboxInstance(), OutboxLastSeq: 2}
	_ = stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Hello{Hello: hello}})
	_, err = stream.Receive()
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "only reaches seq 2") {
		t.Fatalf("stream behind the committed seq: %v; want failed_precondition naming both seqs", err)
	}
}
