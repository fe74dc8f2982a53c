package controlplane_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// promRules is the part of a Prometheus rule file the test reads.
type promRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

var metricName = regexp.MustCompile(`\bcrossdock_[a-zA-Z0-9_]+`)

// agentOnlyWithConnectors are agent metrics whose series exist only while the agent
// runs connectors (plugin processes this test does not start); package agent checks
// them against its collector.
var agentOnlyWithConnectors = map[string]bool{"crossdock_agent_connector_state": true}

// checkNames reports every crossdock_ metric named in text that no scrape has (a
// histogram's _bucket, _sum and _count name the histogram).
func checkNames(t *testing.T, file, text string, scrapes ...map[string]*dto.MetricFamily) int {
	t.Helper()
	names := map[string]bool{}
	for _, n := range metricName.FindAllString(text, -1) {
		names[n] = true
	}
	if len(names) < 10 {
		t.Errorf("%s names only %d crossdock metrics", file, len(names))
	}
	for n := range names {
		found := agentOnlyWithConnectors[n]
		for _, f := range scrapes {
			if _, ok := f[n]; ok {
				found = true
			}
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suf); ok {
					if fam, ok := f[base]; ok && (fam.GetType() == dto.MetricType_HISTOGRAM || fam.GetType() == dto.MetricType_SUMMARY) {
						found = true
					}
				}
			}
		}
		if !found {
			t.Errorf("%s names %s, which is in no scrape of a control plane node or an agent", file, n)
		}
	}
	return len(names)
}

// TestDeployRulesAndDashboardNameRealMetrics parses deploy/prometheus/alerts.yml and
// deploy/grafana/crossdock.json and checks every metric they name against real scrapes
// of a node that delivers to a webhook, answers the partner API and evaluates an Alert,
// and of an agent.
func TestDeployRulesAndDashboardNameRealMetrics(t *testing.T) {
	s := controlplanetest.TestServer(t, func(c *controlplane.Config) { withAlerts(c); withMetrics(c) })
	var calls atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 { // one retry
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}))
	t.Cleanup(recv.Close)
	rc, _ := clientsFor(t, s, s.AdminConfigPath())
	apply(t, rc, fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: shop-stock}
spec: {destination: shop, match: {types: [inventory.level]}}
---
apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: standard}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: standard, scopes: [availability:read], skus: ["NONE-*"]}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: acme-stock}
spec: {condition: inventoryStale, threshold: {staleFor: 1s}}
`, recv.URL, alertSecret))
	a := startAgent(t, s, "wh-deploy")
	publishLevels(t, a, 1, 5)
	cc, err := cliconfig.Load(s.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	partnerCall(t, hc, base)
	var server, agent map[string]*dto.MetricFamily
	testutil.WaitFor(t, 30*time.Second, "deliveries with a retry and the Alert evaluated", func() bool {
		server = scrape(t, s.MetricsAddr())
		delivered, _ := value(server, "crossdock_delivery_delivered_total", map[string]string{"destination": "shop"})
		_, retried := server["crossdock_delivery_retried_total"]
		_, firing := server["crossdock_alerts_firing"]
		return delivered == 5 && retried && firing
	})
	agent = scrape(t, a.MetricsAddr())

	b, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules promRules
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q in group %s lacks alert, expr, labels.severity or annotations.summary", r.Alert, g.Name)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}") {
				t.Errorf("rule %s: unbalanced brackets in %q", r.Alert, r.Expr)
			}
		}
	}
	if n < 10 {
		t.Errorf("deploy/prometheus/alerts.yml has %d rules", n)
	}
	checkNames(t, "deploy/prometheus/alerts.yml", string(b), server, agent)

	b, err = os.ReadFile(filepath.Join("..", "deploy", "grafana", "crossdock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/crossdock.json: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if dash.UID == "" || len(exprs) < 15 {
		t.Errorf("dashboard uid %q with %d queries", dash.UID, len(exprs))
	}
	checkNames(t, "deploy/grafana/crossdock.json", strings.Join(exprs, "\n")+"\n"+string(b), server, agent)
}
