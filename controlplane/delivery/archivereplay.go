package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// An archive replay sends events that were pruned from the ledger, read from the
// leader's archive (controlplane/archive), to a destination again. It is a source of
// the destination's worker like a ledger replay, so the messages go through the same
// route evaluation, per-key queues, policy, signing and dead letters, with the same
// idempotency keys (webhook-id = event id). Unlike a ledger replay it is not recorded
// in raft: it lives as long as the worker and the request that started it, and its
// progress is only what the request streams. A new leader does not resume it; run it
// again (a receiver deduplicating on webhook-id sees the same ids).

// ArchiveEvents yields archived events in seq order: io.EOF after the last, or the
// error that ended the reading (a damaged archive file). *archive.Iterator implements it.
type ArchiveEvents interface {
	Next() (*eventv1.CommittedEvent, error)
}

// ArchiveProgress is where an archive replay is.
type ArchiveProgress struct {
	Scanned      uint64 // events read from the archive
	Sent         uint64 // messages accepted by the destination
	DeadLettered uint64
	Coalesced    uint64
	Done         bool
	Err          error // why it ended early (a damaged file, the worker stopped, cancelled)
}

// ArchiveRun is an archive replay running in a destination's worker.
type ArchiveRun struct {
	Destination string

	cancel context.CancelFunc
	events chan *eventv1.CommittedEvent // closed by the reader at the end
	route  Route

	// Owned by the worker loop.
	src     *source
	scanned uint64
	readAll bool
	readErr error
	errMu   sync.Mutex

	mu     sync.Mutex
	prog   ArchiveProgress
	notify chan struct{} // closed at the next change of prog
}

// Progress returns the run's progress and a channel closed when it changes next.
func (r *ArchiveRun) Progress() (ArchiveProgress, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prog, r.notify
}

// Stop stops reading the archive; messages already queued are still sent.
func (r *ArchiveRun) Stop() { r.cancel() }

func (r *ArchiveRun) publish(p ArchiveProgress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p == r.prog {
		return
	}
	r.prog = p
	close(r.notify)
	r.notify = make(chan struct{})
}

// ErrNoWorker is returned when the destination has no running worker on this node.
var ErrNoWorker = errors.New("no delivery worker runs for the destination on this node")

// archiveInbox hands archive runs to a worker's loop. Once closed (the worker ended) it
// takes none.
type archiveInbox struct {
	mu     sync.Mutex
	runs   []*ArchiveRun
	closed bool
	wake   chan struct{} // buffered 1: pokes the worker loop
}

func (b *archiveInbox) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// ReplayArchive starts sending the archived events to destination through route (which
// must feed it) in the destination's worker on this node, the leader. The events are
// read until ctx ends or Stop; the returned run reports progress.
func (e *Engine) ReplayArchive(ctx context.Context, route, destination string, events ArchiveEvents) (*ArchiveRun, error) {
	e.mu.Lock()
	leading := e.leading
	wr := e.workers[destination]
	e.mu.Unlock()
	if !leading {
		return nil, fmt.Errorf("delivery: this node is not leading delivery: %w", ErrNoWorker)
	}
	if wr == nil || wr.w == nil || wr.done == nil {
		reason := "the destination is not running (see crossdock destinations status)"
		if wr != nil && wr.err != nil {
			reason = wr.err.Error()
		}
		return nil, fmt.Errorf("delivery: destination %s: %s: %w", destination, reason, ErrNoWorker)
	}
	w := wr.w
	rt, ok := w.route(route) // a worker's routes do not change while it runs
	if !ok {
		return nil, fmt.Errorf("delivery: route %s does not feed destination %s", route, destination)
	}
	rctx, cancel := context.WithCancel(ctx)
	run := &ArchiveRun{Destination: destination, cancel: cancel, events: make(chan *eventv1.CommittedEvent, readPage), route: rt, notify: make(chan struct{})}
	in := &w.archive
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("delivery: destination %s: its worker is stopping: %w", destination, ErrNoWorker)
	}
	in.runs = append(in.runs, run)
	in.mu.Unlock()
	go run.read(rctx, events, in)
	in.poke()
	return run, nil
}

// read feeds the run's channel from the archive until the end, an error, or ctx.
func (r *ArchiveRun) read(ctx context.Context, events ArchiveEvents, in *archiveInbox) {
	defer func() {
		close(r.events)
		in.poke()
	}()
	for {
		ev, err := events.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			r.setReadErr(err)
			return
		}
		select {
		case r.events <- ev:
			in.poke()
		case <-ctx.Done():
			r.setReadErr(ctx.Err())
			return
		}
	}
}

func (r *ArchiveRun) setReadErr(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	r.readErr = err
}

func (r *ArchiveRun) getReadErr() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.readErr
}

// archiveStep takes new archive runs, admits their events while the window has room,
// publishes their progress and ends the finished ones. Called by the worker loop.
func (w *worker) archiveStep(now time.Time) {
	w.archive.mu.Lock()
	for _, r := range w.archive.runs {
		r.src = newSource(1)
		r.src.routes = []Route{r.route}
		w.archives = append(w.archives, r)
	}
	w.archive.runs = nil
	w.archive.mu.Unlock()
	keep := w.archives[:0]
	for _, r := range w.archives {
		s := r.src
		s.sent = s.sent[:0] // a new leader sends none of it again: nothing to bound
	read:
		for !r.readAll && w.queued < w.pol.Window && s.items < w.pol.Window {
			select {
			case ev, ok := <-r.events:
				if !ok {
					r.readAll = true
					break read
				}
				r.scanned++
				w.admit(s, ev, now)
			default:
				break read
			}
		}
		done := r.readAll && s.items == 0
		p := ArchiveProgress{Scanned: r.scanned, Sent: s.delivered, DeadLettered: s.dead, Coalesced: s.coalesced, Done: done}
		if done {
			p.Err = r.getReadErr()
			r.cancel()
		}
		r.publish(p)
		if !done {
			keep = append(keep, r)
		}
	}
	clear(w.archives[len(keep):])
	w.archives = keep
}

// archiveStop ends every archive run of a worker that stopped: what was sent stays
// counted, the rest is not sent.
func (w *worker) archiveStop(reason error) {
	w.archive.mu.Lock()
	w.archive.closed = true
	runs := append(w.archives, w.archive.runs...)
	w.archive.runs, w.archives = nil, nil
	w.archive.mu.Unlock()
	for _, r := range runs {
		r.cancel()
		p := ArchiveProgress{Scanned: r.scanned, Done: true, Err: reason}
		if s := r.src; s != nil {
			p.Sent, p.DeadLettered, p.Coalesced = s.delivered, s.dead, s.coalesced
		}
		r.publish(p)
	}
}
