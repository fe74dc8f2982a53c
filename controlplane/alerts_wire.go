package controlplane

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/alerts"
	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// newAlerts builds the alert evaluator (it runs on the leader; see Run) and mounts
// AlertService. webhooks is the --webhook-allow policy notifications are sent under.
func (s *Server) newAlerts(mux *http.ServeMux, opts []connect.HandlerOption, auth *api.AdminAuth, webhooks *delivery.AddressPolicy) {
	edi := s.cfg.EDIAcks
	if edi == nil && s.edi != nil {
		edi = s.edi // the EDI connectors' edi.interchange events, folded by every node
	}
	s.alerts = alerts.New(alerts.Config{
		Store:    ignorable{s.store},
		Delivery: func() ([]delivery.DestinationStatus, error) { return s.delivery.Status() },
		Connected: func() []string {
			var out []string
			for _, c := range s.registry.Conns() {
				out = append(out, c.AgentID)
			}
			return out
		},
		Connectors: func(agent string) (alerts.ConnectorReport, bool) {
			cs, at, ok := s.backend.ConnectorReport(agent)
			return alerts.ConnectorReport{At: at, Connectors: cs}, ok
		},
		EDI:         edi,
		Send:        alerts.NewSender(webhooks, s.keys),
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

// ignorable proposes the alert commands marked Ignorable: a node of an older build
// (during a rolling upgrade) skips them instead of stopping; it just shows no alerts.
type ignorable struct{ *store.Store }

func (p ignorable) Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error) {
	return p.ProposeIgnorable(ctx, typ, msg)
}

// Alerts is the node's alert evaluator.
func (s *Server) Alerts() *alerts.Evaluator { return s.alerts }
