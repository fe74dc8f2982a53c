package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/console"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/partner"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// consoleSource is what the web console reads on this node (console.Source): the
// node's replica, its agent streams and delivery engine.
type consoleSource struct {
	s        *Server
	guard    *api.Guard
	timeline *api.Timeline
	dlq      *api.Delivery
	dir      *partner.Directory

	mu      sync.Mutex
	samples map[string]rateSample // destination -> the previous delivered count
}

type rateSample struct {
	at        time.Time
	delivered uint64
	rate      float64
}

func (c *consoleSource) Node() string { return c.s.cfg.NodeID }
func (c *consoleSource) Leader() bool { return c.s.store.IsLeader() }
func (c *consoleSource) LeaderConsole() string {
	if c.s.store.IsLeader() {
		return ""
	}
	if a := c.s.backend.LeaderAPIAddr(); a != "" {
		return "https://" + a + "/ui/"
	}
	return ""
}

func (c *consoleSource) Agents(ctx context.Context) ([]console.Agent, error) {
	recs, err := c.s.store.Ledger().Agents()
	if err != nil {
		return nil, fmt.Errorf("read agents: %w", err)
	}
	out := make([]console.Agent, 0, len(recs))
	for _, r := range recs {
		a := console.Agent{ID: r.GetId(), CommittedSeq: r.GetCommittedSeq(), Revoked: r.GetRevoked()}
		if conn, ok := c.s.registry.Get(r.GetId()); ok {
			a.Connected, a.Transport, a.RemoteAddr, a.Node = true, conn.Transport, conn.RemoteAddr, c.s.cfg.NodeID
			a.Version, a.Since, a.LastSeen = conn.Version, conn.Since, conn.LastSeen
			a.BacklogKnown = true
			if conn.OutboxLastSeq > r.GetCommittedSeq() {
				a.Backlog = conn.OutboxLastSeq - r.GetCommittedSeq()
			}
		}
		if cs, at, ok := c.s.backend.ConnectorReport(r.GetId()); ok {
			a.ReportedAt = at
			for _, cn := range cs {
				a.Connectors = append(a.Connectors, console.Connector{Name: cn.GetName(), State: cn.GetState(), LastError: cn.GetLastError(), Captured: cn.GetEventsCaptured()})
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func (c *consoleSource) Destinations(ctx context.Context) ([]console.Destination, error) {
	l := c.s.store.Ledger()
	last := l.LastSeq()
	sts, err := c.s.delivery.Status()
	if err != nil {
		return nil, fmt.Errorf("read delivery status: %w", err)
	}
	open, err := l.DeadLetters(ledger.DeadLetterFilter{States: []storev1.DeadLetterState{storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN}})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	openBy := map[string]int{}
	for _, d := range open {
		openBy[d.GetDestination()]++
	}
	now := time.Now()
	// The age of the oldest undelivered event: one read per distinct cursor (many
	// destinations share the same one when caught up).
	ages := map[uint64]time.Duration{}
	out := make([]console.Destination, 0, len(sts))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		c.samples = map[string]rateSample{}
	}
	for _, st := range sts {
		d := console.Destination{Name: st.Name, Kind: st.Kind, Active: st.Active, Breaker: st.Breaker, LastError: st.LastError,
			Queued: st.Queued, InFlight: st.InFlight, OpenDeadLetters: openBy[st.Name], Cursor: 1, Throughput: -1}
		if cur := st.Cursor; cur != nil {
			d.Cursor, d.Delivered, d.DeadLettered, d.Coalesced = max(cur.GetSeq(), 1), cur.GetDelivered(), cur.GetDeadLettered(), cur.GetCoalesced()
		}
		if st.Kind != delivery.KindStream && d.Cursor <= last {
			d.Lag = last - d.Cursor + 1
			age, ok := ages[d.Cursor]
			if !ok {
				if evs, _, err := l.ListEvents(ledger.Filter{}, d.Cursor, 1); err == nil && len(evs) > 0 && evs[0].GetCommittedAt() != nil {
					age = max(now.Sub(evs[0].GetCommittedAt().AsTime()), 0)
				}
				ages[d.Cursor] = age
			}
			d.LagAge = age
		}
		prev, ok := c.samples[st.Name]
		switch {
		case !ok || d.Delivered < prev.delivered:
			c.samples[st.Name] = rateSample{at: now, delivered: d.Delivered, rate: -1}
		case now.Sub(prev.at) >= time.Second:
			r := float64(d.Delivered-prev.delivered) / now.Sub(prev.at).Seconds()
			c.samples[st.Name] = rateSample{at: now, delivered: d.Delivered, rate: r}
			d.Throughput = r
		default:
			d.Throughput = prev.rate
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b console.Destination) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (c *consoleSource) DeadLetters(ctx context.Context, dest string, limit int) ([]console.DeadLetter, error) {
	dls, err := c.s.store.Ledger().DeadLetters(ledger.DeadLetterFilter{Destination: dest})
	if err != nil {
		return nil, fmt.Errorf("read dead letters of %s: %w", dest, err)
	}
	slices.Reverse(dls) // newest event first
	dls = dls[:min(len(dls), limit)]
	out := make([]console.DeadLetter, 0, len(dls))
	for _, d := range dls {
		out = append(out, console.DeadLetter{
			ID: d.GetId(), Route: d.GetRoute(), Seq: d.GetSeq(), EventID: d.GetEventId(), EventType: d.GetEventType(), Keys: d.GetKeys(),
			Error: d.GetError(), State: strings.ToLower(strings.TrimPrefix(d.GetState().String(), "DEAD_LETTER_STATE_")),
			Attempts: len(d.GetAttempts()), CreatedAt: d.GetCreatedAt().AsTime(),
		})
	}
	return out, nil
}

// RetryDeadLetter runs the API's DLQ retry (DeliveryService.RetryDeadLetters): the
// same role (operator), checks, raft command and audit record.
func (c *consoleSource) RetryDeadLetter(ctx context.Context, who console.Principal, id string) error {
	err := c.guard.Authorize(deliveryv1connect.DeliveryServiceRetryDeadLettersProcedure, who.Name, who.Role, func() error {
		_, err := c.dlq.RetryDeadLetters(ctx, connect.NewRequest(&deliveryv1.RetryDeadLettersRequest{Id: id}))
		return err
	})
	if err != nil {
		return fmt.Errorf("retry dead letter %s: %w", id, err)
	}
	return nil
}

func (c *consoleSource) Partners(ctx context.Context) ([]console.Partner, error) {
	all, err := c.dir.All()
	if err != nil {
		return nil, fmt.Errorf("read partners: %w", err)
	}
	l := c.s.store.Ledger()
	day := partner.Day(time.Now())
	out := make([]console.Partner, 0, len(all))
	for name, p := range all {
		calls, refusals, err := l.PartnerUsage(name, day)
		if err != nil {
			return nil, fmt.Errorf("read partner %s usage: %w", name, err)
		}
		q, err := l.PartnerQuota(name, day)
		if err != nil {
			return nil, fmt.Errorf("read partner %s quota: %w", name, err)
		}
		keys, err := l.PartnerKeys(name)
		if err != nil {
			return nil, fmt.Errorf("read partner %s keys: %w", name, err)
		}
		row := console.Partner{Name: name, DisplayName: p.Spec.DisplayName, Tier: p.Spec.Tier, Calls: calls,
			Refusals: len(refusals), QuotaUsed: q.GetUsed(), DailyQuota: uint64(p.Limits.DailyQuota)}
		now := time.Now()
		for _, k := range keys {
			if !k.GetRevoked() && (k.GetExpiresAt() == nil || k.GetExpiresAt().AsTime().After(now)) {
				row.ActiveKeys++
			}
		}
		for mc, n := range calls {
			row.CallsToday += n
			// "method code": anything but ok counts as an error.
			if _, code, _ := strings.Cut(mc, " "); code != "" && code != "ok" {
				row.ErrorsToday += n
			}
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(a, b console.Partner) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (c *consoleSource) Timeline(ctx context.Context, keys map[string]string, limit int) (*adminv1.GetTimelineResponse, error) {
	return c.timeline.Build(keys, limit)
}

// mountConsole serves the web console at /ui/ (behind its login, see package console).
func (s *Server) mountConsole(mux *http.ServeMux, guard *api.Guard) error {
	src := &consoleSource{s: s, guard: guard, timeline: &api.Timeline{Backend: s.backend, Engine: s.delivery},
		dlq: &api.Delivery{Backend: s.backend, Engine: s.delivery}, dir: &partner.Directory{Ledger: s.store.Ledger()}}
	check := func(r *http.Request, token string) (console.Principal, error) {
		name, role, err := guard.CheckAdminToken(r, token)
		return console.Principal{Name: name, Role: role}, err
	}
	c, err := console.New(console.Config{Source: src, CheckToken: check, Logger: s.logger, Alerts: committedAlerts{s.store.Ledger()}})
	if err != nil {
		return fmt.Errorf("controlplane: console: %w", err)
	}
	s.console = c
	mux.Handle(api.ConsolePrefix, c)
	mux.Handle(strings.TrimSuffix(api.ConsolePrefix, "/"), http.RedirectHandler(api.ConsolePrefix, http.StatusSeeOther))
	return nil
}

// SetAlertSource feeds the console's alerts page (nil: "no alerts configured").
func (s *Server) SetAlertSource(src console.AlertSource) {
	if s.console != nil {
		s.console.SetAlerts(src)
	}
}

// Console is the node's web console (/ui/).
func (s *Server) Console() *console.Console { return s.console }

// committedAlerts feeds the console's alerts page from the alert states the leader's
// evaluator committed (controlplane/alerts): every node holds them, so a follower's
// console shows the same alerts as the leader's. Firing first, then by name and key.
type committedAlerts struct{ l *ledger.Ledger }

func (a committedAlerts) Alerts(context.Context) ([]console.Alert, error) {
	states, err := a.l.AlertStates()
	if err != nil {
		return nil, fmt.Errorf("controlplane: console alerts: %w", err)
	}
	api.SortAlertStates(states)
	out := make([]console.Alert, 0, len(states))
	for _, in := range states {
		since := in.GetStartedAt().AsTime()
		if in.GetState() == "resolved" && in.GetResolvedAt() != nil {
			since = in.GetResolvedAt().AsTime()
		}
		out = append(out, console.Alert{Name: in.GetAlert(), Severity: in.GetLabels()["severity"], State: in.GetState(),
			Since: since, Summary: in.GetSummary(), Labels: in.GetLabels()})
	}
	return out, nil
}
