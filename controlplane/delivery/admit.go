package delivery

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// fill reads committed events into the queues while the window has room.
func (w *worker) fill(now time.Time) error {
	l := w.e.ledger()
	last := l.LastSeq()
	srcs := []*source{w.main}
	for _, id := range slices.Sorted(maps.Keys(w.replays)) {
		srcs = append(srcs, w.replays[id])
	}
	for _, s := range srcs {
		for !s.readAll && s.next <= last && w.queued < w.pol.Window && s.outstanding() < w.pol.Window {
			limit := min(readPage, w.pol.Window-w.queued, w.pol.Window-s.outstanding())
			evs, _, err := l.ListEvents(s.filter, s.next, limit)
			var pe *ledger.PrunedError
			if errors.As(err, &pe) && pe.Seq > s.next {
				// Retention removed events this source had not read: a destination that
				// was deleted and defined again, or a replay from below the low-water
				// mark (the cursor of a defined destination holds retention back).
				w.log.Warn("delivery: events were pruned by retention before this destination read them; continuing from the earliest held",
					"destination", w.dest.Name, "from_seq", s.next, "resume_seq", pe.Seq, "err", err)
				s.next = pe.Seq
				continue
			}
			if err != nil {
				return fmt.Errorf("delivery: read ledger from %d: %w", s.next, err)
			}
			if len(evs) == 0 {
				s.next = last + 1 // nothing else matches the filter yet
			}
			for _, ev := range evs {
				if s.end > 0 && ev.GetSeq() > s.end {
					break
				}
				w.admit(s, ev, now)
				s.next = ev.GetSeq() + 1
			}
			if s.end > 0 && (s.next > s.end || (len(evs) > 0 && evs[len(evs)-1].GetSeq() > s.end) || (len(evs) == 0 && last >= s.end)) {
				s.readAll, s.next = true, s.end+1
			}
		}
	}
	return nil
}

// admit maps one event through the source's routes and queues the messages.
func (w *worker) admit(s *source, ev *eventv1.CommittedEvent, now time.Time) {
	var items []*item
	for _, r := range s.routes {
		matched, payload, err := r.Evaluate(ev)
		if err == nil && !matched {
			continue
		}
		it := w.newItem(ev, r.Name, now)
		it.src = s
		if err != nil {
			it.mapErr = fmt.Sprintf("route %s: mapping failed: %v", r.Name, err)
		} else {
			it.payload = payload
		}
		items = append(items, it)
	}
	for _, it := range items {
		if len(items) > 1 {
			it.msgID += "." + it.route
		}
		w.enqueue(it)
	}
}

func (w *worker) newItem(ev *eventv1.CommittedEvent, route string, now time.Time) *item {
	e := ev.GetEvent()
	it := &item{
		seq: ev.GetSeq(), eventID: e.GetId(), eventType: e.GetType(), keys: e.GetKeys(), route: route,
		key: orderKey(e.GetKeys(), w.pol.CoalesceBy, ev.GetSeq()), msgID: e.GetId(), readyAt: now, trace: e.GetTrace(),
	}
	if w.dest.Kind == KindAgent {
		it.event = e // sinks write canonical events
	}
	return it
}

// orderKey is the key messages are ordered (and coalesced) by: the business keys named
// by, or all of them, sorted. An event without keys is ordered with nothing.
func orderKey(keys map[string]string, by []string, seq uint64) string {
	names := by
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(keys))
	}
	var b strings.Builder
	for _, n := range names {
		v, ok := keys[n]
		if !ok {
			continue
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte(0x1f)
	}
	if b.Len() == 0 {
		return "#" + strconv.FormatUint(seq, 10)
	}
	return b.String()
}

// enqueue appends it to its key's queue. With coalescing, a queued message of the same
// key, event type, route and source that is not being sent is replaced: quantities are absolute, so
// only the newest is worth sending.
func (w *worker) enqueue(it *item) {
	q := w.queues[it.key]
	if q == nil {
		q = &keyQueue{}
		w.queues[it.key] = q
	}
	if it.src != nil {
		it.src.track(it.seq)
	}
	if n := len(q.items); w.pol.Coalesce && n > 0 && it.mapErr == "" && it.dlID == "" {
		last := q.items[n-1]
		sending := q.busy && n == 1
		if !sending && last.mapErr == "" && last.dlID == "" && last.route == it.route && last.eventType == it.eventType && last.src == it.src {
			q.items[n-1] = it
			it.notBefore = last.notBefore
			if last.src != nil {
				last.src.untrack(last.seq)
				last.src.coalesced++
			}
			return
		}
	}
	q.items = append(q.items, it)
	w.queued++
	if len(q.items) == 1 && !q.busy {
		w.runnable = append(w.runnable, it.key)
	}
}

// scan picks up dead letters an operator asked to retry and replays started for this
// destination.
func (w *worker) scan(now time.Time) error {
	l := w.e.ledger()
	reps, err := l.Replays()
	if err != nil {
		return err
	}
	for _, r := range reps {
		sr := r.GetReplay()
		if r.GetDone() || sr.GetDestination() != w.dest.Name || w.replays[sr.GetId()] != nil {
			continue
		}
		s := newSource(r.GetNextSeq())
		s.replay, s.end, s.filter = r, sr.GetToSeq(), ledger.Filter{Keys: sr.GetKeys()}
		if rt, ok := w.route(sr.GetRoute()); ok {
			s.routes = []Route{rt}
		} else {
			w.log.Warn("delivery: replay names a route that does not feed this destination; nothing to send", "replay", sr.GetId(), "route", sr.GetRoute())
			s.readAll = true
		}
		w.replays[sr.GetId()] = s
	}
	dls, err := l.RetryingDeadLetters(w.dest.Name)
	if err != nil {
		return err
	}
	// In seq order, so two retried messages of one key keep theirs.
	slices.SortFunc(dls, func(a, b *storev1.DeadLetter) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	for _, d := range dls {
		if w.retrying[d.GetId()] {
			continue
		}
		evs, _, err := l.ListEvents(ledger.Filter{}, d.GetSeq(), 1)
		if errors.Is(err, ledger.ErrPruned) {
			evs, err = nil, nil // the dead letter's own payload is sent (below)
		}
		if err != nil {
			return err
		}
		var it *item
		switch {
		case len(evs) == 1 && evs[0].GetSeq() == d.GetSeq():
			it = w.newItem(evs[0], d.GetRoute(), now)
			// The route is evaluated again: a fixed mapping is the usual reason to retry.
			if rt, ok := w.route(d.GetRoute()); !ok {
				it.mapErr = fmt.Sprintf("route %s no longer feeds destination %s", d.GetRoute(), w.dest.Name)
			} else if matched, payload, err := rt.Evaluate(evs[0]); err != nil {
				it.mapErr = fmt.Sprintf("route %s: mapping failed: %v", d.GetRoute(), err)
			} else if !matched {
				it.mapErr = fmt.Sprintf("route %s no longer matches the event", d.GetRoute())
			} else {
				it.payload = payload
			}
		case len(d.GetPayload()) > 0 && len(d.GetPayload()) < ledger.MaxDeadLetterPayload && w.dest.Kind != KindAgent:
			// Retention removed the event: the payload mapped when it was dead-lettered
			// is sent as it was.
			it = &item{seq: d.GetSeq(), eventID: d.GetEventId(), eventType: d.GetEventType(), keys: d.GetKeys(), route: d.GetRoute(),
				key: "#" + d.GetId(), readyAt: now, payload: d.GetPayload()}
		default:
			it = &item{seq: d.GetSeq(), eventID: d.GetEventId(), route: d.GetRoute(), key: "#" + d.GetId(), readyAt: now,
				mapErr: fmt.Sprintf("event seq %d is no longer in the ledger and the dead letter holds no complete payload to send", d.GetSeq())}
		}
		it.dlID, it.msgID = d.GetId(), d.GetMessageId()
		if it.msgID == "" {
			it.msgID = it.eventID
		}
		w.retrying[d.GetId()] = true
		w.enqueue(it)
	}
	return nil
}

func (w *worker) route(name string) (Route, bool) {
	for _, r := range w.routes {
		if r.Name == name {
			return r, true
		}
	}
	return Route{}, false
}
