package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
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

	archive  archiveInbox  // archive replays handed over (archivereplay.go)
	archives []*ArchiveRun // archive replays running, owned by the loop

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
		archive: archiveInbox{wake: make(chan struct{}, 1)},
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
		w.archiveStep(now) // after the cursor's fill: live delivery has the window first
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
		case <-w.archive.wake:
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
	w.archiveStop(fmt.Errorf("the delivery worker of destination %s stopped (leadership lost, routing changed or shutdown; last error: %v) before the archive replay finished; run it again on the leader (a receiver deduplicating on webhook-id sees the same ids)", w.dest.Name, fatal))
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
