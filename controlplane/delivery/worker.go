package delivery

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Timings of a worker.
const (
	flushEvery     = 50 * time.Millisecond  // cursor advances are proposed at most this often
	scanEvery      = 500 * time.Millisecond // retried dead letters and new replays are looked for
	readPage       = 500                    // events read from the ledger at once
	stopGrace      = 3 * time.Second        // in-flight requests may finish after a stop
	maxAttemptsMem = ledger.MaxDeadLetterAttempts
)

// jobResult is what a send or dead-letter job reports back to the worker loop.
type jobResult struct {
	items []*item
	res   attemptResult
	at    time.Time
	dead  bool  // the items were dead-lettered (committed)
	err   error // a proposal failed: the worker stops
}

// worker delivers to one destination. Its loop owns every field above mu; jobs run in
// goroutines and report on results.
type worker struct {
	e      *Engine
	log    *slog.Logger
	dest   Destination
	pol    sendPolicy
	key    []byte
	routes []Route

	main     *source
	replays  map[string]*source
	queues   map[string]*keyQueue
	runnable []string
	delayed  delayHeap
	queued   int
	inflight int
	limiter  *tokenBucket
	breaker  *breaker
	results  chan jobResult
	retrying map[string]bool
	lastScan time.Time

	flushing  bool
	flushDone chan error
	lastFlush time.Time
	lastErr   string

	mu     sync.Mutex
	status WorkerStatus
}

// WorkerStatus is a destination's live state on the leader.
type WorkerStatus struct {
	Queued      int
	InFlight    int
	Breaker     string
	LastError   string
	ReadSeq     uint64
	PausedUntil time.Time
}

func newWorker(e *Engine, dest Destination, routes []Route) (*worker, error) {
	var key []byte
	if dest.Kind == KindWebhook {
		var err error
		if key, err = ParseSecret(dest.Secret); err != nil {
			return nil, fmt.Errorf("destination %s: %w", dest.Name, err)
		}
	}
	pol := policyOf(dest)
	now := time.Now()
	w := &worker{
		e: e, log: e.log.With("destination", dest.Name), dest: dest, pol: pol, key: key, routes: routes,
		replays: map[string]*source{}, queues: map[string]*keyQueue{},
		limiter: newTokenBucket(pol.RatePerSecond, pol.Burst, now), breaker: newBreaker(pol.FailureThreshold, pol.Cooldown),
		results: make(chan jobResult, pol.Concurrency+1), retrying: map[string]bool{}, flushDone: make(chan error, 1),
	}
	cur, ok, err := e.ledger().DeliveryCursor(dest.Name)
	if err != nil {
		return nil, fmt.Errorf("destination %s: read cursor: %w", dest.Name, err)
	}
	start := uint64(1) // a new destination starts at the beginning of the ledger
	if ok {
		start = cur.GetSeq()
	}
	w.main = newSource(start)
	w.main.routes = routes
	w.status.Breaker = BreakerClosed
	return w, nil
}

// run delivers until ctx is done or a proposal fails (leadership lost), then lets
// in-flight requests finish and proposes the final cursor. Requests and proposals run
// under abort, which outlives ctx: cancelling it (leadership lost) stops them at once.
func (w *worker) run(ctx, abort context.Context) error {
	hard, cancelHard := context.WithCancel(abort)
	defer cancelHard()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	l := w.e.ledger()
	var fatal error
	for fatal == nil && ctx.Err() == nil {
		changed := l.Changed()
		now := time.Now()
		if err := w.fill(now); err != nil {
			fatal = err
			break
		}
		if now.Sub(w.lastScan) >= scanEvery {
			w.lastScan = now
			if err := w.scan(now); err != nil {
				w.log.Warn("delivery: scan for retries and replays", "err", err)
			}
		}
		wake := earliest(w.dispatch(hard, now), w.lastScan.Add(scanEvery))
		if w.dirty() {
			if !w.flushing {
				if d := w.lastFlush.Add(flushEvery); d.After(now) {
					wake = earliest(wake, d)
				} else {
					w.flush(hard, now)
				}
			}
		}
		w.publish()
		wait := time.Hour
		if !wake.IsZero() {
			wait = max(time.Until(wake), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
		case r := <-w.results:
			if err := w.complete(hard, r); err != nil {
				fatal = err
			}
		case err := <-w.flushDone:
			w.flushing = false
			if err != nil {
				fatal = err
				break
			}
			w.main.committed(w.main.proposed)
			for _, rs := range w.replays {
				rs.committed(rs.proposed)
			}
		case <-changed:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
	w.drain(hard, cancelHard)
	if fatal != nil {
		return fatal
	}
	return nil
}

// drain waits for in-flight jobs (up to stopGrace) and proposes the final cursor, so a
// graceful stop (plan change, shutdown) re-sends nothing.
func (w *worker) drain(hard context.Context, cancelHard context.CancelFunc) {
	grace := time.AfterFunc(stopGrace, cancelHard)
	defer grace.Stop()
	for w.inflight > 0 || w.flushing {
		select {
		case r := <-w.results:
			w.inflight--
			if r.err == nil && (r.dead || r.res.outcome == outcomeOK) {
				for _, it := range r.items {
					w.finish(it, r.dead)
				}
			}
		case <-w.flushDone:
			w.flushing = false
		}
	}
	if w.dirty() && hard.Err() == nil {
		w.flush(hard, time.Now())
		select {
		case <-w.flushDone:
		case <-hard.Done():
		}
	}
	w.publish()
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

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
		key: orderKey(e.GetKeys(), w.pol.CoalesceBy, ev.GetSeq()), msgID: e.GetId(), readyAt: now,
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

// finish records that it left its queue: delivered, or dead-lettered when dead.
func (w *worker) finish(it *item, dead bool) {
	if it.dlID != "" {
		delete(w.retrying, it.dlID)
	}
	if it.src == nil {
		return
	}
	it.src.untrack(it.seq)
	heap.Push(&it.src.sent, it.seq)
	if dead {
		it.src.dead++
	} else {
		it.src.delivered++
	}
}

// pop removes the head of key's queue and makes the next message runnable.
func (w *worker) pop(key string, now time.Time) {
	q := w.queues[key]
	q.items = q.items[1:]
	q.busy = false
	w.queued--
	if len(q.items) == 0 {
		delete(w.queues, key)
		return
	}
	w.schedule(key, q.items[0], now)
}

func (w *worker) schedule(key string, head *item, now time.Time) {
	if head.notBefore.After(now) {
		heap.Push(&w.delayed, delayed{at: head.notBefore, key: key})
		return
	}
	w.runnable = append(w.runnable, key)
}

// dispatch starts jobs while concurrency, the circuit and the rate limit allow. It
// returns when it wants to be called again (zero: when something happens).
func (w *worker) dispatch(ctx context.Context, now time.Time) time.Time {
	for w.delayed.Len() > 0 && !w.delayed[0].at.After(now) {
		w.runnable = append(w.runnable, heap.Pop(&w.delayed).(delayed).key)
	}
	var wake time.Time
	if w.delayed.Len() > 0 {
		wake = w.delayed[0].at
	}
	batching := w.dest.AcceptsBatches && w.pol.BatchMaxEvents > 1
	for w.inflight < w.pol.Concurrency && len(w.runnable) > 0 {
		key := w.runnable[0]
		q := w.queues[key]
		head := q.items[0]
		if head.mapErr != "" {
			w.runnable = w.runnable[1:]
			q.busy = true
			w.inflight++
			go w.deadLetterJob(ctx, []*item{head}, head.mapErr, now)
			continue
		}
		if batching && len(w.runnable) < w.pol.BatchMaxEvents && now.Before(head.readyAt.Add(w.pol.BatchMaxWait)) {
			// Wait up to BatchMaxWait from the oldest ready message for a fuller batch.
			wake = earliest(wake, head.readyAt.Add(w.pol.BatchMaxWait))
			break
		}
		if ok, until := w.breaker.allow(now); !ok {
			wake = earliest(wake, until)
			break
		}
		if ok, wait := w.limiter.take(now); !ok {
			w.breaker.neutral()
			wake = earliest(wake, now.Add(wait))
			break
		}
		var batch []*item
		n := 1
		if batching {
			n = w.pol.BatchMaxEvents
		}
		for len(batch) < n && len(w.runnable) > 0 {
			k := w.runnable[0]
			qq := w.queues[k]
			if qq.items[0].mapErr != "" {
				break
			}
			w.runnable = w.runnable[1:]
			qq.busy = true
			batch = append(batch, qq.items[0])
		}
		w.inflight++
		go w.sendJob(ctx, batch)
	}
	return wake
}

// sendJob sends one request and, for retried dead letters it delivered, commits their
// resolution before reporting.
func (w *worker) sendJob(ctx context.Context, items []*item) {
	id, body := items[0].msgID, items[0].payload
	if len(items) > 1 || w.dest.AcceptsBatches {
		id, body = batchBody(items)
	}
	var res attemptResult
	if w.dest.Kind == KindAgent {
		res = w.sendAgent(ctx, items[0])
	} else {
		res = w.e.client.send(ctx, &w.dest, w.key, id, body)
	}
	r := jobResult{items: items, res: res, at: time.Now()}
	if res.outcome == outcomeOK {
		var ids []string
		for _, it := range items {
			if it.dlID != "" {
				ids = append(ids, it.dlID)
			}
		}
		if len(ids) > 0 {
			_, r.err = w.e.propose(ctx, storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS,
				&storev1.ResolveDeadLetters{Ids: ids, State: storev1.DeadLetterState_DEAD_LETTER_STATE_DELIVERED})
		}
	}
	w.results <- r
}

// batchBody is a JSON array of the messages and a deterministic id for it.
func batchBody(items []*item) (string, []byte) {
	h := sha256.New()
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it.payload)
		h.Write([]byte(it.msgID))
		h.Write([]byte{0})
	}
	b.WriteByte(']')
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16]), b.Bytes()
}

// deadLetterJob commits dead letters for items with reason.
func (w *worker) deadLetterJob(ctx context.Context, items []*item, reason string, now time.Time) {
	put := &storev1.PutDeadLetters{}
	for _, it := range items {
		id := it.dlID
		if id == "" {
			id = ledger.DeadLetterID(w.dest.Name, it.route, it.seq)
		}
		d := &storev1.DeadLetter{
			Id: id, Destination: w.dest.Name, Route: it.route, Seq: it.seq, EventId: it.eventID, EventType: it.eventType,
			Keys: it.keys, Payload: it.payload, Error: reason, Attempts: it.attempts, MessageId: it.msgID,
		}
		if it.src != nil && it.src.replay != nil {
			d.ReplayId = it.src.replay.GetReplay().GetId()
		}
		put.DeadLetters = append(put.DeadLetters, d)
	}
	_, err := w.e.propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_DEAD_LETTERS, put)
	if err == nil {
		w.log.Warn("delivery: dead-lettered", "messages", len(items), "route", items[0].route, "seq", items[0].seq, "reason", reason)
	}
	w.results <- jobResult{items: items, dead: true, err: err, at: now}
}

// complete applies a job's result.
func (w *worker) complete(ctx context.Context, r jobResult) error {
	w.inflight--
	if r.err != nil {
		return r.err
	}
	now := time.Now()
	if r.dead {
		for _, it := range r.items {
			w.finish(it, true)
			w.pop(it.key, now)
		}
		return nil
	}
	res := r.res
	att := &storev1.DeliveryAttempt{
		At: timestamppb.New(r.at), Status: int32(res.status), Response: res.response, Error: res.err,
		DurationMicros: res.took.Microseconds(),
	}
	switch res.outcome {
	case outcomeOK:
		w.breaker.success()
		for _, it := range r.items {
			w.finish(it, false)
			w.pop(it.key, now)
		}
		w.e.observeDelivered(w.dest.Name, r.items, now)
		return nil
	case outcomePermanent:
		w.breaker.success() // the destination answered; the message is what it refused
		w.lastErr = res.err
		for _, it := range r.items {
			it.attempts = appendAttempt(it.attempts, att)
		}
		w.inflight++
		go w.deadLetterJob(ctx, r.items, res.err, now)
		return nil
	case outcomeThrottled:
		w.breaker.neutral()
	default:
		w.breaker.failure(now)
	}
	w.lastErr = res.err
	var give []*item
	for _, it := range r.items {
		it.attempts = appendAttempt(it.attempts, att)
		if res.outcome != outcomeThrottled {
			it.tries++
		}
		if it.tries >= w.pol.MaxAttempts {
			give = append(give, it)
			continue
		}
		delay := res.retryAfter
		if delay == 0 {
			delay = backoff(w.pol.Policy, max(it.tries, len(it.attempts), 1))
		}
		it.notBefore = now.Add(delay)
		q := w.queues[it.key]
		q.busy = false
		w.schedule(it.key, it, now)
	}
	if len(give) > 0 {
		w.inflight++
		go w.deadLetterJob(ctx, give, fmt.Sprintf("gave up after %d attempts: %s", w.pol.MaxAttempts, res.err), now)
	}
	return nil
}

func appendAttempt(list []*storev1.DeliveryAttempt, a *storev1.DeliveryAttempt) []*storev1.DeliveryAttempt {
	list = append(list, a)
	if len(list) > maxAttemptsMem {
		list = list[len(list)-maxAttemptsMem:]
	}
	return list
}

// dirty reports whether a cursor or replay has progress to commit.
func (w *worker) dirty() bool {
	if w.main.watermark() > w.main.flushed || w.main.delivered+w.main.dead+w.main.coalesced > 0 {
		return true
	}
	for _, s := range w.replays {
		if s.watermark() > s.flushed || s.delivered+s.dead > 0 || (s.done() && !s.doneFlushed) {
			return true
		}
	}
	return false
}

// flush proposes the cursors' progress; the result arrives on flushDone.
func (w *worker) flush(ctx context.Context, now time.Time) {
	m := &storev1.AdvanceCursors{}
	s := w.main
	wm := s.watermark()
	m.Cursors = append(m.Cursors, &storev1.DeliveryCursor{
		Destination: w.dest.Name, Seq: wm, Delivered: s.delivered, DeadLettered: s.dead, Coalesced: s.coalesced,
		UpdatedAt: timestamppb.New(now),
	})
	s.flushed, s.proposed, s.delivered, s.dead, s.coalesced = wm, wm, 0, 0, 0
	for _, id := range slices.Sorted(maps.Keys(w.replays)) {
		rs := w.replays[id]
		wm := rs.watermark()
		done := rs.done()
		m.Replays = append(m.Replays, &storev1.ReplayProgress{Id: id, NextSeq: wm, Sent: rs.delivered, DeadLettered: rs.dead, Done: done})
		rs.flushed, rs.proposed, rs.delivered, rs.dead = wm, wm, 0, 0
		if done {
			rs.doneFlushed = true
			delete(w.replays, id)
		}
	}
	w.flushing, w.lastFlush = true, now
	go func() {
		_, err := w.e.propose(ctx, storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS, m)
		w.flushDone <- err
	}()
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
		if err != nil {
			return err
		}
		var it *item
		if len(evs) == 1 && evs[0].GetSeq() == d.GetSeq() {
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
		} else {
			it = &item{seq: d.GetSeq(), eventID: d.GetEventId(), route: d.GetRoute(), key: "#" + d.GetId(), readyAt: now,
				mapErr: fmt.Sprintf("event seq %d is no longer in the ledger", d.GetSeq())}
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

func (w *worker) publish() {
	st := WorkerStatus{Queued: w.queued, InFlight: w.inflight, Breaker: w.breaker.state, LastError: w.lastErr, ReadSeq: w.main.next}
	if w.breaker.state == BreakerOpen {
		st.PausedUntil = w.breaker.openUntil
	}
	w.mu.Lock()
	w.status = st
	w.mu.Unlock()
}

func (w *worker) snapshot() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}
