package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// scrape fetches and parses the exposition format from a metrics listener.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", addr, err)
	}
	return fams
}

// value is the sample of family name whose labels include want (gauge, counter, or a
// histogram's count); ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Summary != nil:
			return float64(m.GetSummary().GetSampleCount()), true
		}
	}
	return 0, false
}

func withMetrics(c *controlplane.Config) { c.MetricsListen = "127.0.0.1:0" }

// startAgent runs an in-process agent enrolled at s.
func startAgent(t *testing.T, s *controlplanetest.Server, name string) *agent.Agent {
	t.Helper()
	tok, err := s.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: name}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{s.Addr()}, EnrollToken: tok.Msg.GetToken(),
		LocalAddr: "-", Logger: controlplanetest.Logger(t), MetricsListen: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func publishLevels(t *testing.T, a *agent.Agent, from, n int) {
	t.Helper()
	var evs []*eventv1.Event
	for i := from; i < from+n; i++ {
		ev := level(fmt.Sprintf("SKU-%d", i%5), i)
		ev.Type = "inventory.level"
		ev.Keys = map[string]string{"sku": ev.GetInventoryLevel().GetSku()}
		ev.GetInventoryLevel().Available = fmt.Sprint(i)
		evs = append(evs, ev)
	}
	if _, err := a.Publish(context.Background(), "", evs); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsLedgerSeqAndUplinkStreams(t *testing.T) {
	s := controlplanetest.TestServer(t, withMetrics)
	if s.MetricsAddr() == "" {
		t.Fatal("MetricsListen set but no metrics listener")
	}
	before, ok := value(scrape(t, s.MetricsAddr()), "crossdock_ledger_seq", nil)
	if !ok {
		t.Fatal("crossdock_ledger_seq missing from the scrape")
	}
	a := startAgent(t, s, "wh-metrics")
	publishLevels(t, a, 1, 20)
	controlplanetest.WaitFor(t, 30*time.Second, "crossdock_ledger_seq to grow by 20 and the agent's stream to show", func() bool {
		f := scrape(t, s.MetricsAddr())
		seq, _ := value(f, "crossdock_ledger_seq", nil)
		total, _ := value(f, "crossdock_ledger_committed_events_total", nil)
		streams, _ := value(f, "crossdock_uplink_streams", map[string]string{"agent": "wh-metrics"})
		return seq >= before+20 && total == seq && streams == 1
	})
	f := scrape(t, s.MetricsAddr())
	if v, _ := value(f, "crossdock_raft_leader", nil); v != 1 {
		t.Errorf("crossdock_raft_leader = %v on the only node, want 1", v)
	}
	// The raft log holds at least the agent's 20 events (no snapshot has truncated it).
	if v, _ := value(f, "crossdock_raft_log_bytes", nil); v < 20*100 {
		t.Errorf("crossdock_raft_log_bytes = %v after 20 events, want their bytes", v)
	}
	if v, ok := value(f, "crossdock_raft_snapshot_running", nil); !ok || v != 0 {
		t.Errorf("crossdock_raft_snapshot_running = %v (present %v), want 0", v, ok)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "crossdock_raft_term"} {
		if _, ok := f[name]; !ok {
			t.Errorf("%s missing from the scrape", name)
		}
	}
	// Commit and apply latency: one observation per applied command entry, at least the
	// agent's batches.
	for _, name := range []string{"crossdock_raft_fsm_apply_seconds", "crossdock_raft_commit_apply_latency_seconds"} {
		h := f[name]
		if h == nil || len(h.GetMetric()) != 1 || h.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
			t.Errorf("%s: %v, want a histogram with observations", name, h)
		}
	}
	// The agent's own listener: the outbox drains and the uplink is connected.
	controlplanetest.WaitFor(t, 30*time.Second, "the agent's metrics to show a connected uplink and an empty outbox", func() bool {
		af := scrape(t, a.MetricsAddr())
		h2, _ := value(af, "crossdock_agent_uplink_connected", map[string]string{"transport": "h2"})
		h3, _ := value(af, "crossdock_agent_uplink_connected", map[string]string{"transport": "h3"})
		last, _ := value(af, "crossdock_agent_outbox_last_seq", nil)
		pending, ok := value(af, "crossdock_agent_outbox_pending_events", nil)
		return ok && h2+h3 == 1 && last == 20 && pending == 0
	})
	resp, err := http.Get("http://" + a.MetricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("agent /readyz = %s, want 200", resp.Status)
	}
}

func TestMetricsDeliveryToWebhook(t *testing.T) {
	s := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		withMetrics(c)
		c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	var calls atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 { // the first request fails transiently: one retry
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)
	cc, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	routing := routingv1connect.NewRoutingServiceClient(hc, base)
	docs := fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec:
  destination: shop
  match: {types: [inventory.level]}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available}
`, recv.URL)
	if _, err := routing.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		t.Fatalf("apply the destination and route: %v", err)
	}
	a := startAgent(t, s, "wh-delivery")
	publishLevels(t, a, 1, 10)
	dest := map[string]string{"destination": "shop"}
	testutil.WaitForDetail(t, 60*time.Second, 50*time.Millisecond, "delivery metrics for shop: 10 delivered, lag 0, a retry and ok requests", func() (bool, string) {
		f := scrape(t, s.MetricsAddr())
		delivered, _ := value(f, "crossdock_delivery_delivered_total", dest)
		lag, lok := value(f, "crossdock_delivery_lag_events", dest)
		retried, _ := value(f, "crossdock_delivery_retried_total", dest)
		okReqs, _ := value(f, "crossdock_delivery_request_duration_seconds", map[string]string{"destination": "shop", "outcome": "ok"})
		retryReqs, _ := value(f, "crossdock_delivery_request_duration_seconds", map[string]string{"destination": "shop", "outcome": "retry"})
		detail := fmt.Sprintf("delivered=%v lag=%v retried=%v ok=%v retry=%v", delivered, lag, retried, okReqs, retryReqs)
		return delivered == 10 && lok && lag == 0 && retried >= 1 && retryReqs >= 1 && okReqs >= 1, detail
	})
	f := scrape(t, s.MetricsAddr())
	if v, _ := value(f, "crossdock_delivery_breaker_state", map[string]string{"destination": "shop", "state": "closed"}); v != 1 {
		t.Errorf("breaker closed = %v, want 1", v)
	}
	if v, ok := value(f, "crossdock_delivery_lag_seconds", dest); !ok || v != 0 {
		t.Errorf("lag seconds = %v (present %v), want 0 when caught up", v, ok)
	}
	for _, name := range []string{"crossdock_delivery_dead_lettered_total", "crossdock_delivery_coalesced_total", "crossdock_delivery_active", "crossdock_delivery_queued", "crossdock_delivery_in_flight"} {
		if _, ok := value(f, name, dest); !ok {
			t.Errorf("%s{destination=shop} missing", name)
		}
	}
	partnerCall(t, hc, base)
	f = scrape(t, s.MetricsAddr())
	if v, _ := value(f, "crossdock_partner_requests_total", map[string]string{"partner": "-"}); v < 1 {
		t.Errorf("crossdock_partner_requests_total{partner=\"-\"} = %v after a call without a key, want at least 1", v)
	}
	if v, ok := value(f, "crossdock_views_behind_events", nil); !ok || v != 0 {
		t.Errorf("crossdock_views_behind_events = %v (present %v), want 0 once the views caught up", v, ok)
	}
	checkDocumented(t, f)
}

func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyzFollowsLeader(t *testing.T) {
	c := controlplanetest.TestCluster(t, 3, func(i int, cfg *controlplane.Config) { withMetrics(cfg) })
	leader := c.Leader()
	var survivor *controlplanetest.Server
	var others []int
	for i, n := range c.Nodes {
		if n != leader && survivor == nil {
			survivor = n
		} else {
			others = append(others, i)
		}
	}
	url := "http://" + survivor.MetricsAddr() + "/readyz"
	controlplanetest.WaitFor(t, 30*time.Second, "the follower to be ready", func() bool {
		code, _ := get(t, http.DefaultClient, url)
		return code == http.StatusOK
	})
	for _, i := range others {
		c.Nodes[i].Stop()
	}
	var body string
	controlplanetest.WaitFor(t, 30*time.Second, "/readyz to say 503 without a leader", func() bool {
		var code int
		code, body = get(t, http.DefaultClient, url)
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "no raft leader") {
		t.Errorf("/readyz body %q does not say why (no raft leader)", body)
	}
	if code, _ := get(t, http.DefaultClient, "http://"+survivor.MetricsAddr()+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d without a leader, want 200: the process still serves", code)
	}
	for _, i := range others {
		c.Restart(i)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "/readyz to say 200 once a leader is back", func() bool {
		code, _ := get(t, http.DefaultClient, url)
		return code == http.StatusOK
	})
}

func TestHealthOnAPIPortNeedsNoToken(t *testing.T) {
	s := controlplanetest.TestServer(t, nil) // no metrics listener: the API port serves health alone
	cc, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cc.CAPEM)) {
		t.Fatal("no CA in the admin config")
	}
	// No token and no client certificate.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	base := "https://" + s.Addr()
	for _, p := range []string{"/healthz", "/readyz"} {
		code, body := get(t, c, base+p)
		if code != http.StatusOK {
			t.Errorf("GET %s without a token = %d %q, want 200", p, code, body)
		}
	}
	// Other routes still need the token.
	req, _ := http.NewRequest(http.MethodPost, base+"/crossdock.admin.v1.AdminService/ListAgents", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ListAgents without a token = %s, want 401", resp.Status)
	}
	// A POST to /readyz is not the health route: it goes to the guard like any other.
	resp, err = c.Post(base+"/readyz", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("POST /readyz = 200, want it refused")
	}
}

// documentedMetrics returns the metric names in the tables of docs/operations.md's
// Monitoring section.
func documentedMetrics(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Monitoring\n")
	if start < 0 {
		t.Fatal("docs/operations.md has no Monitoring section")
	}
	doc = doc[start+1:]
	if end := strings.Index(doc[3:], "\n## "); end >= 0 {
		doc = doc[:end+3]
	}
	var names []string
	for _, line := range strings.Split(doc, "\n") {
		if rest, ok := strings.CutPrefix(line, "| `crossdock_"); ok {
			names = append(names, "crossdock_"+rest[:strings.Index(rest, "`")])
		}
	}
	return names
}

// checkDocumented checks the Monitoring section against a scrape of a node that
// delivered to a webhook: every documented control plane metric is in the scrape and
// every crossdock_ metric of the scrape is documented (hashicorp/raft's extras are
// named in the text instead of the table).
func checkDocumented(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	documented := map[string]bool{}
	for _, n := range documentedMetrics(t) {
		documented[n] = true
		if strings.HasPrefix(n, "crossdock_agent_") {
			continue // checked against the agent's collector in package agent
		}
		if strings.HasPrefix(n, "crossdock_alerts_") {
			continue // needs an Alert document: checked in TestAlertDestinationLagFiresAndResolves
		}
		if _, ok := fams[n]; !ok {
			t.Errorf("docs/operations.md documents %s but a scrape does not have it", n)
		}
	}
	if len(documented) < 20 {
		t.Errorf("found only %d metrics in the Monitoring section's tables", len(documented))
	}
	for n := range fams {
		if strings.HasPrefix(n, "crossdock_") && !strings.HasPrefix(n, "crossdock_raft_") || n == "crossdock_raft_leader" || n == "crossdock_raft_term" {
			if !documented[n] {
				t.Errorf("%s is in a scrape but not documented in docs/operations.md's Monitoring section", n)
			}
		}
	}
}

// TestMetricsRetentionAndSegments: a node that prunes says how far (the low-water seq
// equal to its ledger's, the age of the earliest event held, within the retention and a
// few prune intervals) and what its segment files hold.
func TestMetricsRetentionAndSegments(t *testing.T) {
	s := controlplanetest.TestServer(t, func(c *controlplane.Config) {
		withMetrics(c)
		c.PruneInterval = 100 * time.Millisecond
	})
	f := scrape(t, s.MetricsAddr())
	if v, ok := value(f, "crossdock_ledger_low_water_seq", nil); !ok || v != 0 {
		t.Fatalf("crossdock_ledger_low_water_seq = %v (%v) before any prune, want 0", v, ok)
	}
	applyDocs(t, s, shortRetention)
	// Enough events for a key-index flush (a prune never passes one).
	for i := 1; i <= 18000; i += 2000 {
		if err := ingest(context.Background(), s, "a1", i, 2000); err != nil {
			t.Fatal(err)
		}
	}
	// 1s retention, prunes every 100ms: the earliest event held is a few seconds old at
	// most once a prune has left one (a loaded CI machine may run late).
	// shortRetention compacts inventory.level: the leader (this node) follows those keys
	// and its prunes list the events they compact.
	var low, age, keys, listed float64
	controlplanetest.WaitFor(t, 60*time.Second, "a prune that holds events and listed what it compacted, in the metrics", func() bool {
		f = scrape(t, s.MetricsAddr())
		low, _ = value(f, "crossdock_ledger_low_water_seq", nil)
		age, _ = value(f, "crossdock_ledger_oldest_event_age_seconds", nil)
		keys, _ = value(f, "crossdock_retention_compact_keys_followed", nil)
		listed, _ = value(f, "crossdock_retention_compact_listed_events", nil)
		return low > 1 && age > 0 && keys > 0 && listed >= 0
	})
	if ledgerLow := lowWater(s); low > float64(ledgerLow) {
		t.Errorf("crossdock_ledger_low_water_seq = %v, above the ledger's %d read after it", low, ledgerLow)
	}
	if age > 60 {
		t.Errorf("crossdock_ledger_oldest_event_age_seconds = %v with a 1s retention, want under a minute", age)
	}
	files, _ := value(f, "crossdock_ledger_segment_files", nil)
	all, _ := value(f, "crossdock_ledger_segment_bytes", map[string]string{"state": "all"})
	held, _ := value(f, "crossdock_ledger_segment_bytes", map[string]string{"state": "held"})
	if files < 1 || held <= 0 || held > all {
		t.Errorf("segments: %v files, %v bytes, %v held; want a file, some bytes held, no more than all", files, all, held)
	}
}
