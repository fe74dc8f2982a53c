package api

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"connectrpc.com/connect"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Alerts serves AlertService: the alert instances the leader committed, and their
// history (controlplane/alerts evaluates them).
type Alerts struct {
	*Backend
}

// Alert history page sizes.
const (
	DefaultAlertHistory = 100
	MaxAlertHistory     = 1000
)

func alertOf(in *storev1.AlertInstance) *adminv1.Alert {
	return &adminv1.Alert{
		Name: in.GetAlert(), Key: in.GetKey(), State: in.GetState(), Severity: in.GetLabels()["severity"],
		Condition: in.GetLabels()["condition"], Labels: in.GetLabels(), StartedAt: in.GetStartedAt(),
		ResolvedAt: in.GetResolvedAt(), Value: in.GetValue(), Summary: in.GetSummary(), Notified: in.GetNotified(),
	}
}

// ListAlerts lists the current instances, firing first, then by name and key.
func (a *Alerts) ListAlerts(ctx context.Context, req *connect.Request[adminv1.ListAlertsRequest]) (*connect.Response[adminv1.ListAlertsResponse], error) {
	want := req.Msg.GetState()
	if want != "" && want != "firing" && want != "resolved" {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("state: %q is not firing or resolved (empty lists both)", want))
	}
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	states, err := a.Store.Ledger().AlertStates()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	SortAlertStates(states)
	out := &adminv1.ListAlertsResponse{}
	for _, s := range states {
		if want == "" || s.GetState() == want {
			out.Alerts = append(out.Alerts, alertOf(s))
		}
	}
	return connect.NewResponse(out), nil
}

// SortAlertStates orders alert instances as they are listed (the API, the console):
// firing first, then by alert name and instance key.
func SortAlertStates(states []*storev1.AlertInstance) {
	slices.SortStableFunc(states, func(x, y *storev1.AlertInstance) int {
		if fx, fy := x.GetState() == "firing", y.GetState() == "firing"; fx != fy {
			if fx {
				return -1
			}
			return 1
		}
		if c := strings.Compare(x.GetAlert(), y.GetAlert()); c != 0 {
			return c
		}
		return strings.Compare(x.GetKey(), y.GetKey())
	})
}

// ListAlertHistory lists changes, newest first.
func (a *Alerts) ListAlertHistory(ctx context.Context, req *connect.Request[adminv1.ListAlertHistoryRequest]) (*connect.Response[adminv1.ListAlertHistoryResponse], error) {
	limit := int(req.Msg.GetLimit())
	switch {
	case limit < 0 || limit > MaxAlertHistory:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("limit: %d is outside 0 to %d", limit, MaxAlertHistory))
	case limit == 0:
		limit = DefaultAlertHistory
	}
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	h, err := a.Store.Ledger().AlertHistory(req.Msg.GetName(), limit)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &adminv1.ListAlertHistoryResponse{}
	for _, in := range h {
		at := in.GetStartedAt()
		if in.GetState() == "resolved" {
			at = in.GetResolvedAt()
		}
		out.Changes = append(out.Changes, &adminv1.AlertChange{Alert: alertOf(in), At: at})
	}
	return connect.NewResponse(out), nil
}
