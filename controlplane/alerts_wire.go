package controlplane

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/alerts"
	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// newAlerts builds the alert evaluator (it runs on the leader; see Run) and mounts
// AlertService. webhooks is the --webhook-allow policy notifications are sent under.
func (s *Server) newAlerts(mux *http.ServeMux, opts []connect.HandlerOption, auth *api.AdminAuth, webhooks *delivery.AddressPolicy) {
	s.alerts = alerts.New(alerts.Config{
		Store:    s.store,
		Delivery: func() ([]delivery.DestinationStatus, error) { return s.delivery.Status() },
		Connected: func() []string {
			var out []string
			for _, c := range s.registry.Conns() {
				out = append(out, c.AgentID)
			}
			return out
		},
		Connectors: func(agent string) (alerts.ConnectorReport, bool) {
			at, cs, ok := s.backend.ConnectorReport(agent)
			return alerts.ConnectorReport{At: at, Connectors: cs}, ok
		},
		EDI:         s.cfg.EDIAcks,
		Send:        alerts.NewSender(webhooks),
		ExternalURL: "https://" + s.addr,
		Interval:    s.cfg.AlertInterval,
		Logger:      s.logger,
	})
	mux.Handle(adminv1connect.NewAlertServiceHandler(&api.Alerts{Backend: s.backend}, append(opts, connect.WithInterceptors(auth))...))
}

// onAttempt feeds every delivery attempt to the metrics and the alerts' error rates.
func (s *Server) onAttempt(dest, outcome string, took time.Duration) {
	s.obs.onAttempt(dest, outcome, took)
	if s.alerts != nil {
		s.alerts.OnAttempt(dest, outcome, took)
	}
}

// runAlerts runs the evaluator until ctx ends; the returned channel closes then.
func (s *Server) runAlerts(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() { defer close(done); _ = s.alerts.Run(ctx) }()
	return done
}

// Alerts is the node's alert evaluator.
func (s *Server) Alerts() *alerts.Evaluator { return s.alerts }
