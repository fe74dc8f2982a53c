package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/console"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
)

// staticAlerts stands in for the alert evaluator (issue 19 item 5, on another branch)
// behind console.AlertSource.
type staticAlerts []console.Alert

func (s staticAlerts) Alerts(context.Context) ([]console.Alert, error) { return s, nil }

// The alerts page says "No alerts configured" until a source is wired
// (Server.SetAlertSource), then lists its alerts.
func TestConsoleAlertsPage(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	c := browserless(t, cc.CAPEM)
	get := func() page {
		return do(t, c, http.MethodGet, "https://"+srv.Addr()+"/ui/alerts", nil, map[string]string{"Authorization": "Bearer " + cc.Token})
	}
	if p := get(); p.status != http.StatusOK || !strings.Contains(p.body, "No alerts configured") {
		t.Fatalf("unwired: %d %q", p.status, p.body)
	}
	srv.SetAlertSource(staticAlerts{{Name: "shop-lag", Severity: "critical", State: "firing", Since: time.Now(), Summary: "shop lags 5,000 events", Labels: map[string]string{"destination": "shop"}}})
	p := get()
	if p.status != http.StatusOK || strings.Contains(p.body, "No alerts configured") || !strings.Contains(p.body, "shop-lag") ||
		!strings.Contains(p.body, "firing") || !strings.Contains(p.body, "destination=shop") {
		t.Errorf("wired: %d %q", p.status, p.body)
	}
}
