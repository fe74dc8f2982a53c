package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/alerts"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

const alertSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// alertReceiver is a real webhook receiver for alert notifications: it checks every
// request's Standard Webhooks signature and that the body is an Alertmanager version 4
// notification, and keeps them.
type alertReceiver struct {
	t   *testing.T
	srv *httptest.Server
	mu  sync.Mutex
	got []alerts.Notification
	bad []string
}

func newAlertReceiver(t *testing.T) *alertReceiver {
	r := &alertReceiver{t: t}
	key, err := delivery.ParseSecret(alertSecret)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id, tsh := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
		ts, _ := strconv.ParseInt(tsh, 10, 64)
		problem := ""
		var n alerts.Notification
		var raw map[string]any
		switch {
		case id == "" || tsh == "":
			problem = "missing webhook-id or webhook-timestamp"
		case req.Header.Get("webhook-signature") != delivery.Sign(key, id, ts, body):
			problem = "bad signature " + req.Header.Get("webhook-signature")
		case json.Unmarshal(body, &n) != nil || json.Unmarshal(body, &raw) != nil:
			problem = "not JSON: " + string(body)
		case n.Version != "4" || n.GroupKey == "" || (n.Status != "firing" && n.Status != "resolved") || len(n.Alerts) == 0 || n.Receiver != "oncall":
			problem = "not an Alertmanager v4 notification: " + string(body)
		}
		// The fields Alertmanager's webhook payload has, spelled as it spells them.
		for _, f := range []string{"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"} {
			if _, ok := raw[f]; !ok && problem == "" {
				problem = "no field " + f + ": " + string(body)
			}
		}
		for _, a := range n.Alerts {
			if a.Labels["alertname"] == "" || a.StartsAt.IsZero() || a.Fingerprint == "" || a.Annotations["summary"] == "" ||
				(a.Status == "resolved") == a.EndsAt.IsZero() {
				problem = "incomplete alert: " + string(body)
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if problem != "" {
			r.bad = append(r.bad, problem)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.got = append(r.got, n)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// find returns the first notification with an alert of that status and label.
func (r *alertReceiver) find(status, label, value string) (alerts.Notification, alerts.AMAlert, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.got {
		for _, a := range n.Alerts {
			if a.Status == status && a.Labels[label] == value {
				return n, a, true
			}
		}
	}
	return alerts.Notification{}, alerts.AMAlert{}, false
}

func (r *alertReceiver) check() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		r.t.Errorf("alert receiver refused a notification: %s", b)
	}
}

func withAlerts(c *controlplane.Config) {
	c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	c.AlertInterval = 100 * time.Millisecond
}

func clientsFor(t *testing.T, s *controlplanetest.Server, configFrom string) (routingv1connect.RoutingServiceClient, adminv1connect.AlertServiceClient) {
	t.Helper()
	cc, err := cliconfig.Load(configFrom)
	if err != nil {
		t.Fatal(err)
	}
	cc.Addr, cc.Addrs = s.Addr(), nil
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return routingv1connect.NewRoutingServiceClient(hc, base), adminv1connect.NewAlertServiceClient(hc, base)
}

func apply(t *testing.T, c routingv1connect.RoutingServiceClient, docs string) {
	t.Helper()
	if _, err := c.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		t.Fatalf("apply: %v\n%s", err, docs)
	}
}

func listAlerts(t *testing.T, c adminv1connect.AlertServiceClient) map[string]*adminv1.Alert {
	t.Helper()
	res, err := c.ListAlerts(context.Background(), connect.NewRequest(&adminv1.ListAlertsRequest{}))
	if err != nil {
		return nil // e.g. no leader for a moment
	}
	out := map[string]*adminv1.Alert{}
	for _, a := range res.Msg.GetAlerts() {
		out[a.GetName()+" "+a.GetKey()] = a
	}
	return out
}

func TestAlertDestinationLagFiresAndResolves(t *testing.T) {
	s := controlplanetest.TestServer(t, func(c *controlplane.Config) { withAlerts(c); withMetrics(c) })
	var down atomic.Bool
	down.Store(true)
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(shop.Close)
	recv := newAlertReceiver(t)
	rc, ac := clientsFor(t, s, s.AdminConfigPath())
	const lagAge = 2 * time.Second
	apply(t, rc, fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: fast}
spec:
  retry: {maxAttempts: 1000, initialBackoff: 50ms, maxBackoff: 200ms}
  circuitBreaker: {failureThreshold: 1000}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q, policy: fast}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec: {destination: shop, match: {types: [inventory.level]}}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: oncall}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: shop-lag}
spec:
  condition: destinationLag
  severity: critical
  destinations: [shop]
  threshold: {lagAge: %s}
  notify: [oncall]
`, shop.URL, alertSecret, recv.srv.URL, alertSecret, lagAge))
	a := startAgent(t, s, "wh-lag")
	published := time.Now()
	publishLevels(t, a, 1, 5)

	// Fires once the oldest undelivered event is lagAge old (within a few evaluations),
	// not before.
	var firing *adminv1.Alert
	testutil.WaitFor(t, 30*time.Second, "shop-lag to fire", func() bool {
		firing = listAlerts(t, ac)["shop-lag destination=shop"]
		return firing != nil && firing.GetState() == "firing"
	})
	firedAfter := firing.GetStartedAt().AsTime().Sub(published)
	if firedAfter < lagAge {
		t.Errorf("fired %s after the first publish, before the lag could reach %s", firedAfter, lagAge)
	}
	if firing.GetSeverity() != "critical" || firing.GetCondition() != "destinationLag" || firing.GetLabels()["destination"] != "shop" {
		t.Errorf("firing alert = %v", firing)
	}
	testutil.WaitFor(t, 30*time.Second, "a firing notification at the alert receiver, recorded as notified", func() bool {
		_, _, ok := recv.find("firing", "destination", "shop")
		cur := listAlerts(t, ac)["shop-lag destination=shop"]
		return ok && cur.GetNotified()
	})
	if v, _ := value(scrape(t, s.MetricsAddr()), "crossdock_alerts_firing", map[string]string{"alert": "shop-lag", "severity": "critical"}); v != 1 {
		t.Errorf("crossdock_alerts_firing{alert=shop-lag} = %v while firing, want 1", v)
	}
	n, am, _ := recv.find("firing", "destination", "shop")
	if n.GroupLabels["alertname"] != "shop-lag" || am.Labels["severity"] != "critical" || n.Status != "firing" {
		t.Errorf("firing notification = %+v", n)
	}

	// The receiver comes back: the backlog drains and the alert resolves.
	down.Store(false)
	testutil.WaitFor(t, 30*time.Second, "shop-lag to resolve and the resolution to be notified", func() bool {
		cur := listAlerts(t, ac)["shop-lag destination=shop"]
		_, _, ok := recv.find("resolved", "destination", "shop")
		return cur != nil && cur.GetState() == "resolved" && ok
	})
	if v, ok := value(scrape(t, s.MetricsAddr()), "crossdock_alerts_firing", map[string]string{"alert": "shop-lag"}); !ok || v != 0 {
		t.Errorf("crossdock_alerts_firing{alert=shop-lag} = %v (present %v) once resolved, want 0", v, ok)
	}
	cur := listAlerts(t, ac)["shop-lag destination=shop"]
	if !cur.GetStartedAt().AsTime().Equal(firing.GetStartedAt().AsTime()) || cur.GetResolvedAt() == nil {
		t.Errorf("resolved alert = %v; want the firing start kept and a resolution time", cur)
	}
	h, err := ac.ListAlertHistory(context.Background(), connect.NewRequest(&adminv1.ListAlertHistoryRequest{Name: "shop-lag"}))
	if err != nil {
		t.Fatal(err)
	}
	if ch := h.Msg.GetChanges(); len(ch) != 2 || ch[0].GetAlert().GetState() != "resolved" || ch[1].GetAlert().GetState() != "firing" {
		t.Errorf("history = %v; want resolved, firing", ch)
	}
	recv.check()
}

// runAgent runs an agent at servers; the returned func kills it (and waits).
func runAgent(t *testing.T, s *controlplanetest.Server, servers []string, name string) (*agent.Agent, func()) {
	t.Helper()
	tok, err := s.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: name}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: servers, EnrollToken: tok.Msg.GetToken(), LocalAddr: "-", Logger: controlplanetest.Logger(t)})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	kill := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(kill)
	return a, kill
}

// waitEvaluations waits until s's alert evaluator has evaluated n more times.
func waitEvaluations(t *testing.T, s *controlplanetest.Server, n uint64) {
	t.Helper()
	from := s.Alerts().Evaluations()
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("%d alert evaluations on %s", n, s.Config.NodeID), func() bool {
		return s.Alerts().Evaluations() >= from+n
	})
}

func connected(t *testing.T, s *controlplanetest.Server, agentID string) bool {
	res, err := s.Admin.DescribeAgent(context.Background(), connect.NewRequest(&adminv1.DescribeAgentRequest{Id: agentID}))
	return err == nil && res.Msg.GetAgent().GetConnected()
}

const offlineAlert = `apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: wh-offline}
spec:
  condition: agentOffline
  agents: ["wh-*"]
  threshold: {offlineFor: 1s}
`

func TestAlertAgentOfflineFires(t *testing.T) {
	s := controlplanetest.TestServer(t, withAlerts)
	rc, ac := clientsFor(t, s, s.AdminConfigPath())
	apply(t, rc, offlineAlert)
	_, kill := runAgent(t, s, []string{s.Addr()}, "wh-1")
	testutil.WaitFor(t, 30*time.Second, "wh-1 to connect", func() bool { return connected(t, s, "wh-1") })
	// Connected for longer than offlineFor (15 evaluations of 100ms): nothing fires.
	waitEvaluations(t, s, 15)
	if a := listAlerts(t, ac)["wh-offline agent=wh-1"]; a != nil {
		t.Fatalf("a connected agent has an alert: %v", a)
	}
	// The time is taken before the kill: the agent's stream can end (and the server
	// count it offline) before kill returns, which waits for the agent to shut down.
	killed := time.Now()
	kill()
	var a *adminv1.Alert
	testutil.WaitFor(t, 30*time.Second, "wh-offline to fire for wh-1", func() bool {
		a = listAlerts(t, ac)["wh-offline agent=wh-1"]
		return a != nil && a.GetState() == "firing"
	})
	if d := a.GetStartedAt().AsTime().Sub(killed); d < time.Second {
		t.Errorf("fired %s after the kill, before offlineFor (1s)", d)
	}
}

func TestAlertStateSurvivesLeaderChange(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) { withAlerts(cfg) })
	leader := c.Leader()
	cfgPath := c.Nodes[0].AdminConfigPath()
	rc, ac := clientsFor(t, leader, cfgPath)
	apply(t, rc, offlineAlert)
	_, kill := runAgent(t, c.Nodes[0], c.Addrs(), "wh-2")
	testutil.WaitFor(t, 30*time.Second, "wh-2 to connect to the leader", func() bool { return connected(t, leader, "wh-2") })
	kill()
	var before *adminv1.Alert
	testutil.WaitFor(t, 30*time.Second, "wh-offline to fire for wh-2", func() bool {
		before = listAlerts(t, ac)["wh-offline agent=wh-2"]
		return before != nil && before.GetState() == "firing" && before.GetNotified()
	})

	leader.Stop()
	next := c.WaitLeader(leader)
	_, ac2 := clientsFor(t, next, cfgPath)
	var after *adminv1.Alert
	testutil.WaitFor(t, 30*time.Second, "the new leader to list the alert", func() bool {
		after = listAlerts(t, ac2)["wh-offline agent=wh-2"]
		return after != nil
	})
	if after.GetState() != "firing" || !after.GetStartedAt().AsTime().Equal(before.GetStartedAt().AsTime()) {
		t.Fatalf("after the leader change: %v; want still firing since %s", after, before.GetStartedAt().AsTime())
	}
	// The new leader evaluates for longer than offlineFor: the agent is still offline,
	// so the instance neither resolves nor fires a second time.
	waitEvaluations(t, next, 20)
	h, err := ac2.ListAlertHistory(context.Background(), connect.NewRequest(&adminv1.ListAlertHistoryRequest{Name: "wh-offline"}))
	if err != nil {
		t.Fatal(err)
	}
	if ch := h.Msg.GetChanges(); len(ch) != 1 || ch[0].GetAlert().GetState() != "firing" {
		t.Errorf("history after the leader change = %v; want the one firing change", ch)
	}
	if cur := listAlerts(t, ac2)["wh-offline agent=wh-2"]; cur.GetState() != "firing" || !cur.GetNotified() {
		t.Errorf("alert on the new leader = %v", cur)
	}
}

// TestAlertDeadLettersAndErrorRateUseTierThresholds: a destination that refuses every
// event (400: dead-lettered at once) fires deadLetters at its partner tier's threshold
// (2, not the document's 50) and errorRate, labelled with the partner and tier.
func TestAlertDeadLettersAndErrorRateUseTierThresholds(t *testing.T) {
	s := controlplanetest.TestServer(t, withAlerts)
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(refuse.Close)
	rc, ac := clientsFor(t, s, s.AdminConfigPath())
	apply(t, rc, fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: acme-feed}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: acme-stock}
spec: {destination: acme-feed, match: {types: [inventory.level]}}
---
apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: gold}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: gold, scopes: [events:read], skus: ["*"], destinations: [acme-feed]}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: dead}
spec:
  condition: deadLetters
  partners: [acme]
  threshold: {deadLetters: 50}
  tiers:
    gold: {deadLetters: 2}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: failing}
spec:
  condition: errorRate
  threshold: {errorRatio: 0.5, minAttempts: 3}
  window: 30s
`, refuse.URL, alertSecret))
	a := startAgent(t, s, "wh-dead")
	publishLevels(t, a, 1, 5)
	var all map[string]*adminv1.Alert
	testutil.WaitFor(t, 30*time.Second, "dead and failing to fire for acme-feed", func() bool {
		all = listAlerts(t, ac)
		return all["dead destination=acme-feed"].GetState() == "firing" && all["failing destination=acme-feed"].GetState() == "firing"
	})
	d := all["dead destination=acme-feed"]
	if d.GetLabels()["partner"] != "acme" || d.GetLabels()["tier"] != "gold" {
		t.Errorf("dead-letter alert labels = %v; want partner acme, tier gold", d.GetLabels())
	}
}

// TestAlertNotificationRetriedUntilTaken: while the alert receiver answers 503 the
// change stays un-notified; once it answers, the notification arrives (with the same
// webhook-id as the refused tries) and the change is recorded notified.
func TestAlertNotificationRetriedUntilTaken(t *testing.T) {
	s := controlplanetest.TestServer(t, withAlerts)
	var up atomic.Bool
	var mu sync.Mutex
	ids := map[string]int{}
	var taken atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		ids[r.Header.Get("webhook-id")]++
		mu.Unlock()
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		taken.Add(1)
	}))
	t.Cleanup(recv.Close)
	rc, ac := clientsFor(t, s, s.AdminConfigPath())
	apply(t, rc, fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: oncall}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: standard}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: standard, scopes: [availability:read], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: stock}
spec: {condition: inventoryStale, threshold: {staleFor: 1s}, notify: [oncall]}
`, recv.URL, alertSecret))
	testutil.WaitFor(t, 30*time.Second, "stock to fire and its notification to be refused twice", func() bool {
		a := listAlerts(t, ac)["stock partner=acme"]
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range ids {
			n += c
		}
		return a.GetState() == "firing" && n >= 2
	})
	if a := listAlerts(t, ac)["stock partner=acme"]; a.GetNotified() {
		t.Fatalf("recorded notified while the receiver refuses: %v", a)
	}
	up.Store(true)
	testutil.WaitFor(t, 30*time.Second, "the notification to be taken and recorded", func() bool {
		return taken.Load() >= 1 && listAlerts(t, ac)["stock partner=acme"].GetNotified()
	})
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 1 {
		t.Errorf("webhook-ids %v; want one id for every try of one notification", ids)
	}
}
