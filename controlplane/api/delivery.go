package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Delivery serves DeliveryService (admin token, mounted with AdminAuth).
type Delivery struct {
	*Backend
	Engine *delivery.Engine
}

var _ deliveryv1connect.DeliveryServiceHandler = (*Delivery)(nil)

func apiDeadLetter(d *storev1.DeadLetter, whole bool) *deliveryv1.DeadLetter {
	out := &deliveryv1.DeadLetter{
		Id: d.GetId(), Destination: d.GetDestination(), Route: d.GetRoute(), Seq: d.GetSeq(), EventId: d.GetEventId(),
		EventType: d.GetEventType(), Keys: d.GetKeys(), Error: d.GetError(), State: deliveryv1.DeadLetterState(d.GetState()),
		CreatedAt: d.GetCreatedAt(), UpdatedAt: d.GetUpdatedAt(), MessageId: d.GetMessageId(),
		AttemptCount: uint32(len(d.GetAttempts())), ReplayId: d.GetReplayId(),
	}
	if whole {
		out.Payload = d.GetPayload()
		for _, a := range d.GetAttempts() {
			out.Attempts = append(out.Attempts, &deliveryv1.Attempt{
				At: a.GetAt(), Status: a.GetStatus(), Response: a.GetResponse(), Error: a.GetError(), DurationMicros: a.GetDurationMicros(),
			})
		}
	}
	return out
}

// ListDeadLetters lists dead letters, newest event first.
func (d *Delivery) ListDeadLetters(ctx context.Context, req *connect.Request[deliveryv1.ListDeadLettersRequest]) (*connect.Response[deliveryv1.ListDeadLettersResponse], error) {
	if err := d.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	f := ledger.DeadLetterFilter{
		Destination: req.Msg.GetDestination(), Route: req.Msg.GetRoute(), Keys: req.Msg.GetKeys(), ErrorContains: req.Msg.GetErrorContains(),
	}
	if !req.Msg.GetIncludeDelivered() {
		f.States = []storev1.DeadLetterState{storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN, storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}
	}
	dls, err := d.Store.Ledger().DeadLetters(f)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	slices.Reverse(dls)
	dls = dls[:min(len(dls), clampLimit(req.Msg.GetLimit()))]
	out := &deliveryv1.ListDeadLettersResponse{}
	for _, dl := range dls {
		out.DeadLetters = append(out.DeadLetters, apiDeadLetter(dl, false))
	}
	return connect.NewResponse(out), nil
}

// GetDeadLetter returns one dead letter with its payload and attempts.
func (d *Delivery) GetDeadLetter(ctx context.Context, req *connect.Request[deliveryv1.GetDeadLetterRequest]) (*connect.Response[deliveryv1.GetDeadLetterResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id: required (see crossdock dlq ls)"))
	}
	if err := d.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	dl, ok, err := d.Store.Ledger().DeadLetter(req.Msg.GetId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no dead letter %q (see crossdock dlq ls)", req.Msg.GetId()))
	}
	return connect.NewResponse(&deliveryv1.GetDeadLetterResponse{DeadLetter: apiDeadLetter(dl, true)}), nil
}

// RetryDeadLetters asks the engine to send dead letters again.
func (d *Delivery) RetryDeadLetters(ctx context.Context, req *connect.Request[deliveryv1.RetryDeadLettersRequest]) (*connect.Response[deliveryv1.RetryDeadLettersResponse], error) {
	m := req.Msg
	cmd := &storev1.ResolveDeadLetters{State: storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}
	switch {
	case m.GetId() != "" && m.GetAll():
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("give either an id or all with a destination, not both"))
	case m.GetId() != "":
		cmd.Ids = []string{m.GetId()}
	case m.GetAll() && m.GetDestination() != "":
		cmd.Destination = m.GetDestination()
	case m.GetAll():
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("destination: required with all (retry every open dead letter of one destination)"))
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("id: required, or all with a destination"))
	}
	if err := d.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if m.GetId() != "" {
		dl, ok, err := d.Store.Ledger().DeadLetter(m.GetId())
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if !ok {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no dead letter %q (see crossdock dlq ls)", m.GetId()))
		}
		if dl.GetState() != storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("dead letter %s is %s, not open", m.GetId(), stateName(dl.GetState())))
		}
	}
	res, err := d.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS, cmd)
	if err != nil {
		return nil, d.storeError(err)
	}
	r, _ := res.(*storev1.ResolveDeadLettersResult)
	if r.GetError() != "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New(r.GetError()))
	}
	d.Logger.Info("dead letters queued for retry", "id", m.GetId(), "destination", m.GetDestination(), "count", r.GetResolved(), "audit", true)
	return connect.NewResponse(&deliveryv1.RetryDeadLettersResponse{Retrying: r.GetResolved()}), nil
}

func stateName(s storev1.DeadLetterState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DEAD_LETTER_STATE_"))
}

// StartReplay starts a replay of a route's committed events and streams its progress.
func (d *Delivery) StartReplay(ctx context.Context, req *connect.Request[deliveryv1.StartReplayRequest], stream *connect.ServerStream[deliveryv1.StartReplayResponse]) error {
	m := req.Msg
	if m.GetRoute() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("route: required"))
	}
	if m.GetFromSeq() != 0 && m.GetFromTime() != nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("give from_seq or from_time, not both"))
	}
	if err := d.ConsistentRead(ctx); err != nil {
		return err
	}
	plan, err := d.Engine.Plan()
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	var dests []string
	for _, r := range plan.Routes {
		if r.Name == m.GetRoute() {
			dests = r.Destinations
		}
	}
	if dests == nil {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("route: no route %q (see crossdock routes ls)", m.GetRoute()))
	}
	dest := m.GetDestination()
	switch {
	case dest != "" && !slices.Contains(dests, dest):
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("destination: route %s does not feed %q (it feeds %s)", m.GetRoute(), dest, strings.Join(dests, ", ")))
	case dest == "" && len(dests) > 1:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("destination: route %s feeds %s; name one", m.GetRoute(), strings.Join(dests, ", ")))
	case dest == "":
		dest = dests[0]
	}
	l := d.Store.Ledger()
	from := m.GetFromSeq()
	if t := m.GetFromTime(); t != nil {
		if from, err = l.SeqAtTime(t.AsTime()); err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
	}
	var fromTime time.Time
	if t := m.GetFromTime(); t != nil {
		fromTime = t.AsTime()
	}
	if err := checkHeld(l, m.GetFromSeq(), fromTime); err != nil {
		return err
	}
	from = max(from, 1)
	to := l.LastSeq()
	if from > to {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("nothing to replay: the ledger ends at seq %d, the replay would start at %d", to, from))
	}
	id := "rp_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := d.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_START_REPLAY, &storev1.StartReplay{
		Id: id, Route: m.GetRoute(), Destination: dest, FromSeq: from, ToSeq: to, Keys: m.GetKeys(), RequestedAt: timestamppb.Now(),
	}); err != nil {
		return d.storeError(err)
	}
	d.Logger.Info("replay started", "replay", id, "route", m.GetRoute(), "destination", dest, "from_seq", from, "to_seq", to, "audit", true)
	var last *deliveryv1.StartReplayResponse
	for {
		changed := l.Changed()
		rec, ok, err := l.Replay(id)
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		if !ok {
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("replay %s is no longer in this node's ledger (a snapshot restore?)", id))
		}
		cur := &deliveryv1.StartReplayResponse{
			ReplayId: id, Destination: dest, FromSeq: from, ToSeq: to, NextSeq: rec.GetNextSeq(),
			Sent: rec.GetSent(), DeadLettered: rec.GetDeadLettered(), Done: rec.GetDone(),
		}
		if last == nil || cur.GetNextSeq() != last.GetNextSeq() || cur.GetSent() != last.GetSent() || cur.GetDone() {
			if err := stream.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		if cur.GetDone() || m.GetDetach() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // the replay goes on; its progress is in the ledger
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// GetDeliveryStatus shows every destination's cursor, lag and live state.
func (d *Delivery) GetDeliveryStatus(ctx context.Context, req *connect.Request[deliveryv1.GetDeliveryStatusRequest]) (*connect.Response[deliveryv1.GetDeliveryStatusResponse], error) {
	if err := d.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	l := d.Store.Ledger()
	last := l.LastSeq()
	sts, err := d.Engine.Status()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	open, err := l.DeadLetters(ledger.DeadLetterFilter{States: []storev1.DeadLetterState{storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN}})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	openBy := map[string]uint32{}
	for _, dl := range open {
		openBy[dl.GetDestination()]++
	}
	out := &deliveryv1.GetDeliveryStatusResponse{LastSeq: last}
	for _, s := range sts {
		ds := &deliveryv1.DestinationStatus{
			Destination: s.Name, Kind: s.Kind, Breaker: s.Breaker, Queued: uint32(s.Queued), InFlight: uint32(s.InFlight),
			LastError: s.LastError, Active: s.Active, OpenDeadLetters: openBy[s.Name], Cursor: 1,
		}
		if c := s.Cursor; c != nil {
			ds.Cursor, ds.Delivered, ds.DeadLettered, ds.Coalesced = c.GetSeq(), c.GetDelivered(), c.GetDeadLettered(), c.GetCoalesced()
		}
		if s.Kind == delivery.KindWebhook && last+1 > ds.Cursor {
			ds.Lag = last + 1 - ds.Cursor
		}
		if !s.PausedUntil.IsZero() {
			ds.PausedUntil = timestamppb.New(s.PausedUntil)
		}
		out.Destinations = append(out.Destinations, ds)
	}
	return connect.NewResponse(out), nil
}

// Partner serves PartnerService: the partner event stream of stream destinations. It
// reads this node's ledger, so any node answers (a follower's may lag a little).
type Partner struct {
	*Backend
	Engine *delivery.Engine
	// KeyAllows, when set, accepts a partner API key (Authorization header) whose
	// partner holds events:read and lists the destination (partner.Server.StreamAllowed).
	KeyAllows func(authorization, destination string) bool
}

var _ deliveryv1connect.PartnerServiceHandler = (*Partner)(nil)

// Subscribe streams a stream destination's mapped events after the cursor.
func (p *Partner) Subscribe(ctx context.Context, req *connect.Request[deliveryv1.SubscribeRequest], stream *connect.ServerStream[deliveryv1.SubscribeResponse]) error {
	name := req.Msg.GetDestination()
	if name == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("destination: required"))
	}
	if req.Msg.GetCursor() == math.MaxUint64 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("cursor: not a ledger seq (resume with the cursor of the last message received)"))
	}
	plan, err := p.Engine.Plan()
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	var dest *delivery.Destination
	for i := range plan.Destinations {
		if plan.Destinations[i].Name == name {
			dest = &plan.Destinations[i]
		}
	}
	// Until partners have API keys, the stream takes the destination's secret (when its
	// document has one) or an admin token. An unknown destination and a wrong credential
	// answer the same, so names cannot be probed.
	auth := req.Header().Get("Authorization")
	secret, _ := strings.CutPrefix(auth, "Bearer ")
	secretOK := dest != nil && dest.Secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(dest.Secret)) == 1
	keyOK := !secretOK && p.KeyAllows != nil && p.KeyAllows(auth, name)
	if !secretOK && !keyOK && (&AdminAuth{Ledger: p.Store.Ledger()}).check(auth) != nil {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("credentials required: Authorization: Bearer <a partner API key with events:read, the stream destination's secret or an admin token>"))
	}
	if dest == nil || dest.Kind != delivery.KindStream {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("destination: %q is not a stream destination (see crossdock destinations ls)", name))
	}
	var routes []delivery.Route
	for _, r := range plan.Routes {
		if slices.Contains(r.Destinations, name) {
			routes = append(routes, r)
		}
	}
	l := p.Store.Ledger()
	// Cursor 0 (nothing received yet) starts from the earliest event held; a cursor
	// below the retention low-water mark gets OutOfRange naming the earliest held.
	from := req.Msg.GetCursor() + 1
	if req.Msg.GetCursor() == 0 {
		from = 0
	}
	for {
		changed := l.Changed()
		evs, _, err := l.ListEvents(ledger.Filter{}, from, 500)
		if err != nil {
			return readError(err)
		}
		for _, ev := range evs {
			for _, r := range routes {
				ok, payload, err := r.Evaluate(ev)
				if err != nil {
					p.Logger.Warn("partner stream: mapping failed; event skipped", "destination", name, "route", r.Name, "seq", ev.GetSeq(), "err", err)
					continue
				}
				if !ok {
					continue
				}
				if err := stream.Send(&deliveryv1.SubscribeResponse{
					Cursor: ev.GetSeq(), Id: ev.GetEvent().GetId(), Route: r.Name, EventType: ev.GetEvent().GetType(),
					Payload: payload, CommittedAt: ev.GetCommittedAt(),
				}); err != nil {
					return err
				}
			}
			from = ev.GetSeq() + 1
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(5 * time.Second):
			// The plan may have changed (a new route, a rotated secret): end the stream so
			// the partner reconnects under the current one.
			if np, err := p.Engine.Plan(); err == nil && np.Version != plan.Version {
				return connect.NewError(connect.CodeUnavailable, errors.New("routing changed; reconnect with your last cursor"))
			}
		}
	}
}
