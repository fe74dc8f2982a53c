package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Timeline serves TimelineService (admin token, mounted with AdminAuth): one business
// key's events and what delivery did with them. The RPC answers on the leader (whose
// attempt log holds the attempts); Build works on any node from its replica, with the
// attempts of this node's log only (empty on a follower: attempts_node "").
type Timeline struct {
	*Backend
	Engine *delivery.Engine
}

var _ adminv1connect.TimelineServiceHandler = (*Timeline)(nil)

// MaxTimelineEvents bounds one timeline.
const MaxTimelineEvents = 1000

// GetTimeline answers TimelineService.GetTimeline.
func (t *Timeline) GetTimeline(ctx context.Context, req *connect.Request[adminv1.GetTimelineRequest]) (*connect.Response[adminv1.GetTimelineResponse], error) {
	keys := req.Msg.GetKeys()
	if len(keys) == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("keys: give at least one business key, e.g. sku=A-100 or order=SO-1"))
	}
	for k, v := range keys {
		if k == "" || v == "" {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("keys: %q=%q: name and value must both be set (name=value)", k, v))
		}
	}
	// The attempts are in the leader's memory: a follower sends the caller there (the
	// CLI follows); the console on a follower calls Build and says whose log it shows.
	if !t.Store.IsLeader() {
		return nil, t.notLeader()
	}
	limit := int(req.Msg.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxTimelineEvents)
	out, err := t.Build(keys, limit)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(out), nil
}

// Build assembles the timeline of the events carrying every one of keys: the newest
// limit of them, oldest first. The console calls it too.
func (t *Timeline) Build(keys map[string]string, limit int) (*adminv1.GetTimelineResponse, error) {
	l := t.Store.Ledger()
	out := &adminv1.GetTimelineResponse{Node: t.Store.NodeID(), Leader: t.Store.IsLeader(), LastSeq: l.LastSeq()}
	// The key index lists matches in seq order; keep the newest limit.
	var evs []*eventv1.CommittedEvent
	from := uint64(0)
	for {
		page, next, err := l.ListEvents(ledger.Filter{Keys: keys}, from, 1000)
		if err != nil {
			return nil, fmt.Errorf("timeline: read events with %v: %w", keys, err)
		}
		evs = append(evs, page...)
		if len(evs) > limit {
			evs = evs[len(evs)-limit:]
			out.Truncated = true
		}
		if next == 0 || len(page) == 0 {
			break
		}
		from = next
	}
	seqs := make(map[uint64]bool, len(evs))
	for _, ev := range evs {
		seqs[ev.GetSeq()] = true
	}

	// What delivery knows: the committed cursors and dead letters (every node), the
	// attempt log (this node, while it leads), the current routes.
	cursors := map[string]uint64{}
	if cs, err := l.DeliveryCursors(); err == nil {
		for _, c := range cs {
			cursors[c.GetDestination()] = c.GetSeq()
		}
	} else {
		return nil, fmt.Errorf("timeline: read delivery cursors: %w", err)
	}
	dls, err := l.DeadLetters(ledger.DeadLetterFilter{Keys: keys})
	if err != nil {
		return nil, fmt.Errorf("timeline: read dead letters: %w", err)
	}
	type dk struct {
		seq  uint64
		dest string
	}
	dlBy := map[dk]*storev1.DeadLetter{}
	for _, d := range dls {
		dlBy[dk{d.GetSeq(), d.GetDestination()}] = d
	}
	var attempts []delivery.Attempt
	var plan *delivery.Plan
	if t.Engine != nil {
		log := t.Engine.Attempts()
		if out.Leader {
			out.AttemptsNode = out.Node
			if _, oldest := log.Stats(); !oldest.IsZero() {
				out.AttemptsSince = timestamppb.New(oldest)
			}
		}
		attempts = log.Find(seqs)
		if p, err := t.Engine.Plan(); err == nil {
			plan = p
		}
	}
	attBy := map[dk][]delivery.Attempt{}
	attBySeq := map[uint64][]delivery.Attempt{}
	for _, a := range attempts {
		attBy[dk{a.Seq, a.Destination}] = append(attBy[dk{a.Seq, a.Destination}], a)
		attBySeq[a.Seq] = append(attBySeq[a.Seq], a)
	}
	dlBySeq := map[uint64][]*storev1.DeadLetter{}
	for _, d := range dls {
		dlBySeq[d.GetSeq()] = append(dlBySeq[d.GetSeq()], d)
	}

	for _, ev := range evs {
		te := &adminv1.TimelineEvent{
			Seq: ev.GetSeq(), Id: ev.GetEvent().GetId(), Type: ev.GetEvent().GetType(), Keys: ev.GetEvent().GetKeys(),
			Agent: ev.GetAgent(), OccurredAt: ev.GetEvent().GetOccurredAt(), CommittedAt: ev.GetCommittedAt(),
		}
		committed := ev.GetCommittedAt().AsTime()
		if oa := ev.GetEvent().GetOccurredAt(); oa != nil && ev.GetCommittedAt() != nil {
			te.CommitLagMicros = committed.Sub(oa.AsTime()).Microseconds()
		}
		// The destinations: those the current routes send it to, and any with an
		// attempt or dead letter for it (a route may have changed since).
		routeOf := map[string]string{}
		var dests []string
		addDest := func(d, route string) {
			if _, ok := routeOf[d]; !ok {
				dests = append(dests, d)
				routeOf[d] = route
			}
		}
		if plan != nil {
			for _, r := range plan.Routes {
				var matched bool
				var err error
				switch {
				case r.Selects != nil:
					matched, err = r.Selects(ev)
				case r.Evaluate != nil:
					matched, _, err = r.Evaluate(ev)
				}
				if !matched && err == nil {
					continue
				}
				for _, d := range r.Destinations {
					addDest(d, r.Name)
				}
			}
		}
		for _, a := range attBySeq[ev.GetSeq()] {
			addDest(a.Destination, a.Route)
		}
		for _, d := range dlBySeq[ev.GetSeq()] {
			addDest(d.GetDestination(), d.GetRoute())
		}
		slices.Sort(dests)
		for _, d := range dests {
			te.Deliveries = append(te.Deliveries, deliveryOf(d, routeOf[d], ev.GetSeq(), committed, cursors, attBy[dk{ev.GetSeq(), d}], dlBy[dk{ev.GetSeq(), d}]))
		}
		out.Events = append(out.Events, te)
	}
	return out, nil
}

func lagOf(at, committed time.Time) int64 {
	if at.IsZero() || committed.IsZero() {
		return 0
	}
	return at.Sub(committed).Microseconds()
}

// deliveryOf folds what is known of one event at one destination into its state and
// steps.
func deliveryOf(dest, route string, seq uint64, committed time.Time, cursors map[string]uint64, atts []delivery.Attempt, dl *storev1.DeadLetter) *adminv1.TimelineDelivery {
	td := &adminv1.TimelineDelivery{Destination: dest, Route: route, State: "pending"}
	var at time.Time
	for _, a := range atts {
		st := &adminv1.TimelineStep{
			At: timestamppb.New(a.At), Kind: a.Kind, Outcome: a.Outcome, HttpStatus: int32(a.Status), Error: a.Error,
			DurationMicros: a.Took.Microseconds(), LagMicros: lagOf(a.At, committed), ReplayId: a.ReplayID,
			DeadLetterId: a.DeadLetterID, Attempt: uint32(a.Number),
		}
		td.Steps = append(td.Steps, st)
		switch {
		case a.Kind == "attempt" && a.Outcome == "ok":
			td.State, at = "delivered", a.At
		case a.Kind == "attempt":
			if td.State != "delivered" {
				td.State, at = "failing", a.At
			}
		case a.Kind == "dead_letter":
			td.State, at = "dead_lettered", a.At
		}
	}
	if dl != nil {
		td.DeadLetterId = dl.GetId()
		created, updated := dl.GetCreatedAt().AsTime(), dl.GetUpdatedAt().AsTime()
		if len(atts) == 0 {
			// The log does not hold its attempts (another leader, or evicted): the dead
			// letter's own record of them.
			for i, a := range dl.GetAttempts() {
				td.Steps = append(td.Steps, &adminv1.TimelineStep{
					At: a.GetAt(), Kind: "attempt", Outcome: "failed", HttpStatus: a.GetStatus(), Error: a.GetError(),
					DurationMicros: a.GetDurationMicros(), LagMicros: lagOf(a.GetAt().AsTime(), committed), Attempt: uint32(i + 1),
					ReplayId: dl.GetReplayId(),
				})
			}
			td.Steps = append(td.Steps, &adminv1.TimelineStep{At: dl.GetCreatedAt(), Kind: "dead_letter", Outcome: "open",
				Error: dl.GetError(), LagMicros: lagOf(created, committed), DeadLetterId: dl.GetId(), ReplayId: dl.GetReplayId()})
		}
		switch dl.GetState() {
		case storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN:
			td.State, at = "dead_lettered", created
		case storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING:
			td.State, at = "retrying", updated
			td.Steps = append(td.Steps, &adminv1.TimelineStep{At: dl.GetUpdatedAt(), Kind: "retry_requested", Outcome: "retrying",
				LagMicros: lagOf(updated, committed), DeadLetterId: dl.GetId()})
		case storev1.DeadLetterState_DEAD_LETTER_STATE_DELIVERED:
			td.State, at = "delivered", updated
			td.Steps = append(td.Steps, &adminv1.TimelineStep{At: dl.GetUpdatedAt(), Kind: "retry_delivered", Outcome: "delivered",
				LagMicros: lagOf(updated, committed), DeadLetterId: dl.GetId()})
		default:
			td.State, at = stateName(dl.GetState()), updated
		}
	}
	if td.State == "pending" || td.State == "failing" {
		if c, ok := cursors[dest]; ok && c > seq && dl == nil && td.State == "pending" {
			td.State = "delivered_by_cursor"
		}
	}
	slices.SortStableFunc(td.Steps, func(a, b *adminv1.TimelineStep) int { return a.GetAt().AsTime().Compare(b.GetAt().AsTime()) })
	if !at.IsZero() && td.State != "pending" && td.State != "delivered_by_cursor" {
		td.At = timestamppb.New(at)
		td.LagMicros = lagOf(at, committed)
	}
	return td
}
