package delivery

import (
	"container/heap"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

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
	was := w.breaker.state
	defer func() { w.logBreaker(was, res) }()
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
		w.logFailure(r.items, res, "dead-lettering: the destination refused the message", 0)
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
		if it == r.items[0] {
			w.logFailure(r.items, res, "will retry", delay)
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
