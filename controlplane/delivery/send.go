package delivery

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/tracing"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

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
	sctx := ctx
	var span trace.Span
	if tracing.Enabled() {
		sctx, span = w.startAttemptSpan(ctx, items)
	}
	if w.dest.Kind == KindAgent {
		res = w.sendAgent(sctx, items[0])
	} else {
		res = w.e.client.send(sctx, &w.dest, w.key, id, body)
	}
	if span != nil {
		endAttemptSpan(span, res)
	}
	if h := w.e.cfg.OnAttempt; h != nil {
		h(w.dest.Name, res.outcome.String(), res.took)
	}
	r := jobResult{items: items, res: res, at: time.Now()}
	w.e.attempts.recordSend(w.dest.Name, items, res, r.at)
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
	ids := make([]string, 0, len(items))
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
		ids = append(ids, id)
	}
	_, err := w.e.propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_DEAD_LETTERS, put)
	if err == nil {
		w.e.logs.Log(w.log, slog.LevelWarn, "dead:"+w.dest.Name, "delivery: dead-lettered; `crossdock dlq` lists and retries it",
			append(w.messageArgs(items[0], len(items)), "reason", reason)...)
		w.e.attempts.recordDead(w.dest.Name, items, ids, reason, time.Now())
	}
	w.results <- jobResult{items: items, dead: true, err: err, at: now}
}
