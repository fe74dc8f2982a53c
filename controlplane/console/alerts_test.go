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

// staticAlerts is a console.AlertSource of fixed alerts: it replaces the node's own
// (the committed alert states) to test the page's rendering alone.
type staticAlerts []console.Alert

func (s staticAlerts) Alerts(context.Context) ([]console.Alert, error) { return s, nil }

// The node wires its committed alert states into the alerts page (none yet: "No alerts
// firing"); the page lists what its source gives. TestConsoleInBrowser sees a real
// alert fire and resolve.
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
	if p := get(); p.status != http.StatusOK || !strings.Contains(p.body, "No alerts firing") || strings.Contains(p.body, "No alerts configured") {
		t.Fatalf("no alerts yet: %d %q", p.status, p.body)
	}
	srv.SetAlertSource(staticAlerts{{Name: "shop-lag", Severity: "critical", State: "firing", Since: time.Now(), Summary: "shop lags 5,000 events", Labels: map[string]string{"destination": "shop"}}})
	p := get()
	if p.status != http.StatusOK || strings.Contains(p.body, "No alerts configured") || !strings.Contains(p.body, "shop-lag") ||
		!strings.Contains(p.body, "firing") || !strings.Contains(p.body, "destination=shop") {
		t.Errorf("wired: %d %q", p.status, p.body)
	}
}
