// Package delivery sends committed events to their destinations: signed webhooks
// (Standard Webhooks), the partner event stream, and (later) agent sinks.
//
// The Engine runs only on the raft leader. It keeps one worker per webhook
// destination; a worker reads the ledger from the destination's committed cursor,
// evaluates the routes feeding it, queues messages per business key (one in flight per
// key, so a key's order is kept), and sends them under the destination's policy: token
// bucket rate limit, per-key coalescing, batching, retries with backoff and jitter
// honouring Retry-After, a circuit breaker, and dead letters after MaxAttempts or at
// once on a permanent refusal or a mapping error.
//
// Cursors (the seq below which every event is delivered or dead-lettered) and dead
// letters are committed through raft (COMMAND_TYPE_ADVANCE_CURSORS and
// PUT_DEAD_LETTERS), so a new leader resumes from the committed cursor: at most the
// in-flight window is sent again, with the same idempotency keys (webhook-id = event id).
package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/platform/ratelog"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Store is what the engine needs from the node: the ledger, leadership, proposals.
// *store.Store implements it.
type Store interface {
	Ledger() *ledger.Ledger
	IsLeader() bool
	WaitForLeadership(ctx context.Context) error
	Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error)
}

// Config configures an Engine.
type Config struct {
	Store  Store
	Plans  PlanSource
	Logger *slog.Logger
	// AddressPolicy decides which addresses webhooks may connect to; nil allows only
	// public addresses (see AddressPolicy).
	AddressPolicy *AddressPolicy
	// Poll is how often leadership and the plan are checked (default 100ms).
	Poll time.Duration
	// OnDelivered, when set, is called after messages were accepted (benchmarks).
	OnDelivered func(destination string, seqs []uint64, at time.Time)
	// AgentSink delivers to agent destinations; without it they are not run.
	AgentSink AgentSink
	// OnAttempt, when set, is called after every request to a destination with its
	// outcome ("ok", "retry", "throttled" or "permanent") and duration (metrics).
	OnAttempt func(destination, outcome string, took time.Duration)
	// LogBurst and LogEvery rate-limit the log lines of failures, dead letters and
	// breaker changes per destination: LogBurst lines of each kind per LogEvery, the
	// rest counted on the next line written (defaults 5 per minute).
	LogBurst int
	LogEvery time.Duration
	// AttemptLogSize bounds the in-memory attempt log the timeline reads
	// (DefaultAttemptLogSize when 0; see AttemptLog).
	AttemptLogSize int
}

// Engine delivers on the leader. Run it on every node: it is idle on followers.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	logs   *ratelog.Limiter // per destination and kind of line
	client *webhookClient

	mu      sync.Mutex
	workers map[string]*workerRun
	plan    *Plan
	leading bool

	// attempts keeps the latest attempts this node made (the timeline's view).
	attempts *AttemptLog
}

type workerRun struct {
	fp     string // the destination's Fingerprint when started
	w      *worker
	cancel context.CancelFunc
	abort  context.CancelFunc
	done   chan error
	err    error
	failed time.Time
}

// New returns an engine; Run starts it.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AddressPolicy == nil {
		cfg.AddressPolicy = &AddressPolicy{}
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	return &Engine{cfg: cfg, log: cfg.Logger, logs: ratelog.New(cfg.LogBurst, cfg.LogEvery), client: &webhookClient{http: newHTTPClient(cfg.AddressPolicy, nil), now: time.Now}, workers: map[string]*workerRun{}, attempts: NewAttemptLog(cfg.AttemptLogSize)}
}

func (e *Engine) ledger() *ledger.Ledger { return e.cfg.Store.Ledger() }

// propose commits a command; a refusal result (an error value) is an error too.
func (e *Engine) propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := e.cfg.Store.Propose(ctx, typ, msg)
	if err != nil {
		return nil, fmt.Errorf("delivery: propose %s: %w", typ, err)
	}
	if rerr, ok := res.(error); ok {
		return nil, fmt.Errorf("delivery: %s refused: %w", typ, rerr)
	}
	return res, nil
}

func (e *Engine) observeDelivered(dest string, items []*item, at time.Time) {
	if e.cfg.OnDelivered == nil {
		return
	}
	seqs := make([]uint64, len(items))
	for i, it := range items {
		seqs[i] = it.seq
	}
	e.cfg.OnDelivered(dest, seqs, at)
}

// Run delivers while this node is the leader, until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	defer e.stopAll(false)
	version, planErr := "", ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !e.cfg.Store.IsLeader() {
			if e.isLeading() {
				e.log.Info("delivery: leadership lost; stopping")
				e.stopAll(true)
				e.setLeading(false, nil)
			}
			continue
		}
		if !e.isLeading() {
			// Apply everything earlier leaders committed (their cursors) before resuming.
			bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := e.cfg.Store.WaitForLeadership(bctx)
			cancel()
			if err != nil {
				e.log.Warn("delivery: waiting for leadership barrier", "err", err)
				continue
			}
			e.log.Info("delivery: leading; starting workers")
			e.setLeading(true, nil)
			version = "\x00" // force a start
		}
		plan, err := e.cfg.Plans.Plan()
		if err != nil {
			// Logged once per distinct error: the check repeats every Poll.
			if msg := err.Error(); msg != planErr {
				e.log.Error("delivery: cannot read the routing plan; delivery keeps the previous one", "err", err)
				planErr = msg
			}
			continue
		}
		planErr = ""
		if plan == nil {
			plan = &Plan{}
		}
		if plan.Version != version {
			e.stopChanged(plan)
			e.setLeading(true, plan)
			version = plan.Version
		}
		e.reconcile(ctx, plan)
	}
}

func (e *Engine) isLeading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

func (e *Engine) setLeading(v bool, p *Plan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.leading, e.plan = v, p
}

// reconcile starts a worker for every webhook destination that has none (or whose
// worker stopped with an error more than a second ago).
func (e *Engine) reconcile(ctx context.Context, plan *Plan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range plan.Destinations {
		runs := d.Kind == KindWebhook || (d.Kind == KindAgent && e.cfg.AgentSink != nil)
		if !runs || d.Err != "" || e.blocked(&d) != nil {
			continue // Status says why; the events wait at the cursor
		}
		if r := e.workers[d.Name]; r != nil {
			select {
			case err := <-r.done:
				r.err, r.failed = err, time.Now()
				r.done = nil
				if err != nil {
					e.log.Warn("delivery: worker stopped", "destination", d.Name, "err", err)
				}
			default:
			}
			if r.done != nil || time.Since(r.failed) < time.Second {
				continue
			}
		}
		w, err := newWorker(e, d, plan.routesTo(d.Name))
		if err != nil {
			e.log.Warn("delivery: cannot start destination", "destination", d.Name, "err", err)
			e.workers[d.Name] = &workerRun{fp: d.Fingerprint, err: err, failed: time.Now()}
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		actx, abort := context.WithCancel(context.WithoutCancel(ctx))
		r := &workerRun{fp: d.Fingerprint, w: w, cancel: cancel, abort: abort, done: make(chan error, 1)}
		e.workers[d.Name] = r
		go func() { r.done <- w.run(wctx, actx) }()
	}
}

// blocked says why the address policy refuses a webhook destination's URL host (a
// literal non-public IP or an obviously internal name): one stored before the policy
// existed, or applied to a node started with another allow-list. Its worker is not
// started: nothing is sent and nothing dead-lettered until the URL or the allow-list
// changes.
func (e *Engine) blocked(d *Destination) error {
	if d.Kind != KindWebhook {
		return nil
	}
	return e.cfg.AddressPolicy.checkURL(d.URL)
}

// stopChanged gracefully stops the workers whose destination left plan or changed (by
// Fingerprint; every one when fingerprints are not set); reconcile starts them again.
func (e *Engine) stopChanged(plan *Plan) {
	keep := map[string]string{}
	for _, d := range plan.Destinations {
		if d.Fingerprint != "" {
			keep[d.Name] = d.Fingerprint
		}
	}
	e.mu.Lock()
	stop := map[string]*workerRun{}
	for name, r := range e.workers {
		if fp, ok := keep[name]; !ok || fp != r.fp {
			stop[name] = r
			delete(e.workers, name)
		}
	}
	e.mu.Unlock()
	stopRuns(stop, false)
}

// stopAll stops every worker and waits until each has stopped. Graceful stops let
// in-flight requests finish and commit the cursors; with abort (leadership lost) they
// are cancelled at once: nothing could be committed, and a new leader may be sending
// the same keys already.
func (e *Engine) stopAll(abort bool) {
	e.mu.Lock()
	runs := e.workers
	e.workers = map[string]*workerRun{}
	e.mu.Unlock()
	stopRuns(runs, abort)
}

func stopRuns(runs map[string]*workerRun, abort bool) {
	for _, r := range runs {
		if r.cancel != nil {
			r.cancel()
		}
		if abort && r.abort != nil {
			r.abort()
		}
	}
	for _, r := range runs {
		if r.done != nil {
			<-r.done
		}
		if r.abort != nil {
			r.abort()
		}
	}
}

// DestinationStatus is one destination's delivery state as this node sees it.
type DestinationStatus struct {
	Name   string
	Kind   string
	Active bool // a worker runs it on this node (the leader)
	Cursor *storev1.DeliveryCursorRecord
	WorkerStatus
}

// Status reports every destination of the current plan (empty on a follower).
func (e *Engine) Status() ([]DestinationStatus, error) {
	type run struct {
		w      *worker
		active bool
		err    error
	}
	e.mu.Lock()
	plan := e.plan
	runs := make(map[string]run, len(e.workers))
	for k, v := range e.workers {
		runs[k] = run{w: v.w, active: v.done != nil, err: v.err}
	}
	e.mu.Unlock()
	if plan == nil {
		var err error
		if plan, err = e.cfg.Plans.Plan(); err != nil || plan == nil {
			return nil, err
		}
	}
	var out []DestinationStatus
	for _, d := range plan.Destinations {
		st := DestinationStatus{Name: d.Name, Kind: d.Kind}
		cur, _, err := e.ledger().DeliveryCursor(d.Name)
		if err != nil {
			return nil, err
		}
		st.Cursor = cur
		st.Breaker = BreakerClosed
		if r, ok := runs[d.Name]; ok {
			if r.w != nil {
				st.WorkerStatus = r.w.snapshot()
				st.Active = r.active
			}
			if r.err != nil {
				st.LastError = r.err.Error()
			}
		}
		blocked := e.blocked(&d)
		switch {
		case d.Err != "":
			st.LastError = d.Err
		case blocked != nil:
			st.LastError = fmt.Sprintf("destinations/%s: spec.url: %v", d.Name, blocked)
		case d.Kind == KindAgent && e.cfg.AgentSink == nil:
			st.LastError = "agent sink delivery is not wired in this build (no downlink to agents yet)"
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b DestinationStatus) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// Plan returns the current plan (for the partner stream and the API).
func (e *Engine) Plan() (*Plan, error) { return e.cfg.Plans.Plan() }
