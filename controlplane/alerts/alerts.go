// Package alerts evaluates the Alert documents on the raft leader, commits the firing
// and resolved state of every alert instance through raft, and sends the changes to the
// alerts' webhook destinations as Alertmanager webhook notifications, signed like every
// Crossdock webhook (docs/observability.md, "Alerts").
//
// Only the leader evaluates. What it measures in memory (how long a condition has held,
// error rates, when an agent went offline) starts afresh at every leadership; what it
// decided (an instance firing since a time, whether that was notified) is committed, so
// a new leader continues from it: an instance that fires keeps firing, with the same
// start, while its condition holds, and a change not yet notified is notified by the
// next leader.
package alerts

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// DefaultInterval is how often the leader evaluates the alerts (--alert-interval).
const DefaultInterval = 10 * time.Second

// Alert instance states.
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Store is what the evaluator needs of the replicated store (*store.Store).
type Store interface {
	IsLeader() bool
	Ledger() *ledger.Ledger
	Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error)
}

// EDIAcks is what the ediAckOverdue condition asks of the EDI code: how many of a
// trading partner's functional acknowledgements (997/999) are overdue now. Until the
// EDI code provides it (Config.EDI nil), ediAckOverdue alerts never fire.
type EDIAcks interface {
	OverdueAcks(partner string) int
}

// ConnectorReport is the connectors of an agent as it last reported them to this node.
type ConnectorReport struct {
	At         time.Time
	Connectors []*agentv1.ConnectorStatus
}

// Config wires the evaluator to the node.
type Config struct {
	Store Store
	// Delivery reports the destinations' state on this node (the leader runs them).
	Delivery func() ([]delivery.DestinationStatus, error)
	// Connected lists the agents streaming to this node (agents stream to the leader).
	Connected func() []string
	// Connectors returns an agent's last connector report on this node.
	Connectors func(agent string) (ConnectorReport, bool)
	// EDI answers ediAckOverdue; nil: those alerts never fire.
	EDI EDIAcks
	// Send posts a notification (nil: an HTTP client that reaches only public
	// addresses; the server passes one with its --webhook-allow policy).
	Send *Sender
	// ExternalURL is sent as the notification's externalURL (the node's API URL).
	ExternalURL string
	// Interval between evaluations (DefaultInterval when 0).
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil); tests do not replace it.
	Now func() time.Time
}

// Evaluator evaluates the alerts while its node leads.
type Evaluator struct {
	cfg      Config
	attempts attempts
	evals    atomic.Uint64

	mu      sync.Mutex
	leading bool
	since   time.Time            // start of this leadership
	pending map[string]time.Time // instance -> when its condition started to hold
	offline map[string]time.Time // agent -> when this leader first saw it without a stream
	inv     inventoryTracker
	retries map[string]retry // alert -> pause after a failed notification
}

// New returns an evaluator; Run starts it.
func New(cfg Config) *Evaluator {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Send == nil {
		cfg.Send = NewSender(nil, nil)
	}
	return &Evaluator{cfg: cfg}
}

// OnAttempt counts one delivery attempt for errorRate (delivery Config.OnAttempt).
func (e *Evaluator) OnAttempt(dest, outcome string, _ time.Duration) {
	e.attempts.add(dest, outcome == "retry" || outcome == "permanent", e.cfg.Now())
}

// Run evaluates every Interval while the node leads, until ctx ends.
func (e *Evaluator) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !e.cfg.Store.IsLeader() {
			e.lost()
			continue
		}
		if err := e.Evaluate(ctx); err != nil && ctx.Err() == nil {
			e.cfg.Logger.Warn("alerts: evaluation failed; retrying at the next interval", "err", err, "interval", e.cfg.Interval)
		}
	}
}

// lost forgets what this node measured while it led.
func (e *Evaluator) lost() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leading {
		return
	}
	e.leading = false
	e.pending, e.offline, e.inv, e.retries = nil, nil, inventoryTracker{}, nil
}

// observation is one instance's condition as measured now.
type observation struct {
	key    string
	labels map[string]string
	// known: the measurement says whether the condition holds; an unknown one (no data
	// yet, an agent not reported since this leadership) changes nothing.
	known bool
	bad   bool
	value string
}

func instanceID(alert, key string) string { return alert + "\x00" + key }

// Evaluate evaluates every Alert once, commits the changes and sends the notifications
// not sent yet. It is called on the leader.
func (e *Evaluator) Evaluate(ctx context.Context) error {
	now := e.cfg.Now()
	e.mu.Lock()
	if !e.leading {
		e.leading, e.since = true, now
		e.pending, e.offline = map[string]time.Time{}, map[string]time.Time{}
		e.attempts.reset(now)
	}
	e.mu.Unlock()
	l := e.cfg.Store.Ledger()
	states, err := l.AlertStates()
	if err != nil {
		return fmt.Errorf("alerts: read alert states: %w", err)
	}
	if recs, err := l.Documents(string(routing.KindAlert)); err != nil {
		return fmt.Errorf("alerts: read alert documents: %w", err)
	} else if len(recs) == 0 && len(states) == 0 {
		e.evals.Add(1) // no Alert documents: nothing to measure
		return nil
	}
	docs, err := loadDocs(l)
	if err != nil {
		return err
	}
	current := map[string]*storev1.AlertInstance{}
	for _, s := range states {
		current[instanceID(s.GetAlert(), s.GetKey())] = s
	}
	env, err := e.measure(docs, now)
	if err != nil {
		return err
	}
	put := &storev1.PutAlertStates{}
	seen := map[string]bool{}
	e.mu.Lock()
	for _, a := range docs.alerts {
		spec := a.Alert
		obs := e.observe(env, a.Name(), spec, now)
		for _, o := range obs {
			id := instanceID(a.Name(), o.key)
			seen[id] = true
			cur := current[id]
			firing := cur != nil && cur.GetState() == StateFiring
			if !o.known {
				continue
			}
			if !o.bad {
				delete(e.pending, id)
				if firing {
					put.Instances = append(put.Instances, e.change(a, o, cur, StateResolved, now))
				}
				continue
			}
			start, ok := e.pending[id]
			if !ok {
				start = now
				e.pending[id] = now
			}
			if !firing && now.Sub(start) >= spec.ForDuration() {
				put.Instances = append(put.Instances, e.change(a, o, cur, StateFiring, now))
			}
		}
	}
	e.mu.Unlock()
	for id, cur := range current {
		if seen[id] {
			continue
		}
		if _, ok := docs.byName[cur.GetAlert()]; !ok {
			// The Alert document is gone: forget its instances (history stays).
			put.Forget = append(put.Forget, &storev1.AlertRef{Alert: cur.GetAlert(), Key: cur.GetKey()})
			continue
		}
		if cur.GetState() == StateFiring {
			// The thing it watched is gone (destination deleted, agent revoked).
			in := proto.Clone(cur).(*storev1.AlertInstance)
			in.State, in.ResolvedAt, in.Value = StateResolved, timestamppb.New(now), "no longer watched"
			put.Instances = append(put.Instances, in)
		}
	}
	if len(put.Instances) > 0 || len(put.Forget) > 0 {
		sort.Slice(put.Instances, func(i, j int) bool {
			return instanceID(put.Instances[i].GetAlert(), put.Instances[i].GetKey()) < instanceID(put.Instances[j].GetAlert(), put.Instances[j].GetKey())
		})
		if _, err := e.cfg.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_ALERT_STATES, put); err != nil {
			return fmt.Errorf("alerts: commit %d alert changes: %w", len(put.Instances), err)
		}
		for _, in := range put.Instances {
			e.cfg.Logger.Info("alert "+in.GetState(), "alert", in.GetAlert(), "instance", in.GetKey(), "value", in.GetValue(), "severity", in.GetLabels()["severity"])
		}
	}
	err = e.notify(ctx, docs)
	e.evals.Add(1)
	return err
}

// Evaluations counts the evaluations this node finished (tests wait on it).
func (e *Evaluator) Evaluations() uint64 { return e.evals.Load() }

// change is the instance after a change to state.
func (e *Evaluator) change(a *routing.Document, o observation, cur *storev1.AlertInstance, state string, now time.Time) *storev1.AlertInstance {
	labels := map[string]string{"alertname": a.Name(), "severity": a.Alert.SeverityOrDefault(), "condition": a.Alert.Condition}
	maps.Copy(labels, o.labels)
	in := &storev1.AlertInstance{Alert: a.Name(), Key: o.key, Labels: labels, State: state, Value: o.value}
	if state == StateFiring {
		in.StartedAt = timestamppb.New(now)
	} else {
		in.StartedAt, in.ResolvedAt = cur.GetStartedAt(), timestamppb.New(now)
	}
	in.Summary = summary(a, labels, o.value, state)
	return in
}

func summary(a *routing.Document, labels map[string]string, value, state string) string {
	if a.Alert.Summary != "" {
		return a.Alert.Summary
	}
	var what []string
	for _, k := range []string{"destination", "partner", "agent", "connector"} {
		if v := labels[k]; v != "" {
			what = append(what, k+" "+v)
		}
	}
	s := fmt.Sprintf("%s: %s: %s", a.Alert.Condition, strings.Join(what, ", "), value)
	if state == StateResolved {
		s += " (resolved)"
	}
	return s
}

// docs is the documents one evaluation reads.
type docs struct {
	alerts   []*routing.Document
	byName   map[string]*routing.Document
	dests    map[string]*routing.Document
	partners map[string]*routing.PartnerSpec
	// partnerOf is the partner whose Partner document lists a destination (the first
	// by name when several do).
	partnerOf map[string]string
}

func loadDocs(l *ledger.Ledger) (*docs, error) {
	d := &docs{byName: map[string]*routing.Document{}, dests: map[string]*routing.Document{}, partners: map[string]*routing.PartnerSpec{}, partnerOf: map[string]string{}}
	read := func(kind routing.Kind, fn func(*routing.Document)) error {
		recs, err := l.Documents(string(kind))
		if err != nil {
			return fmt.Errorf("alerts: read %s documents: %w", kind.Plural(), err)
		}
		for _, rec := range recs {
			doc, err := routing.FromRecord(rec)
			if err != nil {
				return fmt.Errorf("alerts: %w", err)
			}
			fn(doc)
		}
		return nil
	}
	if err := read(routing.KindAlert, func(doc *routing.Document) {
		d.alerts = append(d.alerts, doc)
		d.byName[doc.Name()] = doc
	}); err != nil {
		return nil, err
	}
	if err := read(routing.KindDestination, func(doc *routing.Document) { d.dests[doc.Name()] = doc }); err != nil {
		return nil, err
	}
	if err := read(routing.KindPartner, func(doc *routing.Document) { d.partners[doc.Name()] = doc.Partner }); err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(d.partners)) {
		for _, dn := range d.partners[p].Destinations {
			if _, ok := d.partnerOf[dn]; !ok {
				d.partnerOf[dn] = p
			}
		}
	}
	slices.SortFunc(d.alerts, func(a, b *routing.Document) int { return strings.Compare(a.Name(), b.Name()) })
	return d, nil
}
