// Package retention runs the ledger's retention on the raft leader: every interval it
// computes, from committed data only (commit times in the ledger, the Retention
// document, delivery cursors and replays), the cutoff seq of each event type and the
// dedup cutoff, and proposes COMMAND_TYPE_PRUNE_LEDGER with them, so every node removes
// exactly the same events (controlplane/ledger, prune.go). A prune larger than one
// command goes in steps: the next is proposed as soon as the previous one applied.
//
// A cutoff never passes the delivery cursor of a destination the routing documents
// define (webhook and agent destinations; their events wait at the cursor), nor the
// next seq of a replay in progress. A deleted destination holds nothing. Stream
// destinations (partners) keep their own cursor and do not hold retention: a partner
// asking below the low-water mark gets ledger.ErrPruned.
//
// For the compact types the leader also follows the log (compactFollower, compact.go)
// and lists in each prune the events it compacts: only the keys whose newest event it
// removes, so a key the log holds a newer event of costs no write.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// DefaultInterval is how often the leader computes retention (--prune-interval).
const DefaultInterval = 30 * time.Second

// Store is what the pruner needs from the node. *store.Store implements it.
type Store interface {
	Ledger() *ledger.Ledger
	IsLeader() bool
	WaitForLeadership(ctx context.Context) error
	Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error)
}

// Config configures a Pruner.
type Config struct {
	Store Store
	// Plans gives the destinations whose cursors hold retention back.
	Plans delivery.PlanSource
	// Interval between runs (DefaultInterval when 0).
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the leader's clock (time.Now when nil).
	Now func() time.Time
	// Archiver, when set, is this node's archive: every interval, on every node, the
	// events the next prune will remove (the cutoffs computed Interval ahead) are
	// archived in the background (ledger.ArchiveAhead), so the prune's Apply finds them
	// archived and only deletes.
	Archiver ledger.AheadArchiver
	// StepEvents is the events one PRUNE_LEDGER step removes at most (DefaultStepEvents
	// when 0). A step's Apply holds every commit behind it, on every node: smaller
	// steps bound that stall.
	StepEvents int
	// CompactKeys is the most (type, keys) of compact types the leader follows to leave
	// out of a prune's compacted writes the keys the log holds a newer event of
	// (DefaultCompactKeys when 0; negative: not followed, every key pruned is written).
	CompactKeys int
	// CanList reports whether a prune may list the events it compacts: nil when every
	// node applies a listed prune (controlplane/features.CompactListed), else an error
	// naming the nodes that do not (a node of an older build ignores the list and would
	// write the newest pruned event of every key). The prune then writes every key, as
	// every build does. Nil func: always.
	CanList func() error
}

// DefaultStepEvents bounds what one prune step costs the commits queued behind it (the
// Apply's cost is about proportional to the events it removes; BenchmarkPruneApply in
// docs/performance.md). The leader proposes the next step when one is committed, so
// ingest entries appended meanwhile apply in between.
const DefaultStepEvents = 2_500

// MaxStepEvents is the largest StepEvents a server takes (--prune-step-events): a
// step also archives at most 4 MiB of events, so much larger steps remove no more.
const MaxStepEvents = 100_000

// aheadBatch is the events one ArchiveAhead call hands the archive at most.
const aheadBatch = 20_000

// maxPace is the longest Run waits between two prune steps or two batches archived
// ahead (see pace).
const maxPace = time.Second

// pace is the wait between the parts of one interval's work when Run spreads it over
// spread: the n events it may touch (an estimate from above), in parts of per, spread
// evenly, at most maxPace apart; zero when it is one part or spread is zero. The work
// of an interval (at 5,000 events/s, 60 prune steps of 2,500 events and 8 batches
// archived ahead, on every node at once) done back to back kept two cores busy for
// seconds every interval, and the commits queued meanwhile set the p99 commit latency
// (docs/performance.md, the soaks of 2026-12-05). Spread over half the interval, the
// steps still finish well before the next interval, so retention keeps up with any
// ingest rate it kept up with before: when behind, there are more parts and the waits
// shrink.
func pace(n uint64, per int, spread time.Duration) time.Duration {
	if spread <= 0 || per <= 0 || n <= uint64(per) {
		return 0
	}
	parts := (n + uint64(per) - 1) / uint64(per)
	return min(spread/time.Duration(parts), maxPace)
}

// minStepGap and maxStepFactor size the steps of a retention that is behind (stepSize).
const (
	minStepGap    = 50 * time.Millisecond
	maxStepFactor = 4
)

// stepSize is the events per prune step for n events to prune over spread: per, unless
// per-sized steps would come less than minStepGap apart (a retention far behind: turned
// on over a large ledger, or outrun by ingest), then as large as it takes to stay that
// far apart, up to maxStepFactor times per. Back to back, a step commits about every
// raft round trip whatever its size, so steps of per events pruned a few thousand events
// a second under heavy ingest (bench/growth, docs/performance.md) and retention fell
// further behind; larger steps hold the commits behind them longer, which is what a
// retention that is behind must pay to catch up. Once (spread 0) keeps per.
func stepSize(n uint64, per int, spread time.Duration) int {
	if spread <= 0 || per <= 0 {
		return per
	}
	steps := max(uint64(spread/minStepGap), 1)
	if n <= uint64(per)*steps {
		return per
	}
	return int(min((n+steps-1)/steps, uint64(maxStepFactor*per)))
}

// toPrune is an estimate from above of the events m removes: from the low-water mark to
// its highest cutoff.
func toPrune(l *ledger.Ledger, m *storev1.PruneLedger) uint64 {
	hi := m.GetDefaultBelow()
	for _, c := range m.GetTypes() {
		hi = max(hi, c.GetBelow())
	}
	low, _ := l.LowWater()
	return hi - min(hi, max(low, 1))
}

// wait waits d or until ctx is done, and reports whether ctx is still live.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Pruner proposes prunes while this node leads. Run it on every node.
type Pruner struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // serializes Once
	lastErr  string
	held     string
	ready    atomic.Bool      // this leadership's barrier passed; false when not leading
	fmu      sync.Mutex       // guards follower and followed
	follower *compactFollower // this leadership's; nil when not leading
	followed string           // the last error following the log, logged once
	unlisted string           // the last reason CanList gave, logged once
	stats    struct {
		keys   atomic.Int64 // keys the follower holds
		listed atomic.Int64 // seqs the last prune listed; -1: it compacted every key
	}
}

// CompactStats is what the leader's follower of compact keys holds (see
// compactFollower): the keys it follows (0 when not leading), and whether the last
// prune listed the events it compacted and how many (Listed false: it compacted the
// newest event of every key it removed).
type CompactStats struct {
	KeysFollowed int
	Listed       bool
	ListedSeqs   int
}

// CompactStats reports the follower's state; safe to call at any time.
func (p *Pruner) CompactStats() CompactStats {
	n := p.stats.listed.Load()
	return CompactStats{KeysFollowed: int(p.stats.keys.Load()), Listed: n >= 0, ListedSeqs: int(max(n, 0))}
}

// New returns a Pruner; Run starts it.
func New(cfg Config) *Pruner {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.StepEvents <= 0 {
		cfg.StepEvents = DefaultStepEvents
	}
	if cfg.CompactKeys == 0 {
		cfg.CompactKeys = DefaultCompactKeys
	}
	p := &Pruner{cfg: cfg, log: cfg.Logger}
	p.stats.listed.Store(-1)
	return p
}

// Run prunes every Interval while this node is the leader, and archives ahead of the
// prunes on every node (Ahead, in a goroutine of its own: a large backlog to archive,
// when retention is first turned on, must not hold the prunes back; they archive what
// is not archived yet themselves), and while leading follows the log for the compact
// types every second (runFollow), until ctx is done.
func (p *Pruner) Run(ctx context.Context) error {
	var bg sync.WaitGroup
	defer bg.Wait()
	if p.cfg.Archiver != nil {
		bg.Go(func() { p.runAhead(ctx) })
	}
	if p.cfg.CompactKeys > 0 {
		bg.Go(func() { p.runFollow(ctx) })
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !p.cfg.Store.IsLeader() {
			if p.ready.Swap(false) {
				p.fmu.Lock()
				p.follower = nil // its memory goes with the leadership
				p.stats.keys.Store(0)
				p.stats.listed.Store(-1)
				p.fmu.Unlock()
			}
			continue
		}
		_, err := p.once(ctx, p.cfg.Interval/2)
		switch {
		case err == nil:
			p.lastErr = ""
		case ctx.Err() != nil:
			return nil
		case err.Error() != p.lastErr: // logged once per distinct error: it repeats every interval
			p.lastErr = err.Error()
			p.log.Error("retention: prune failed; retried at the next interval", "err", err)
		}
	}
}

// Once computes the cutoffs now and, if they remove anything, proposes prunes until
// the ledger reports no more, one step as soon as the last is committed. It returns
// the events removed. Call it on the leader.
func (p *Pruner) Once(ctx context.Context) (uint64, error) { return p.once(ctx, 0) }

// once is Once with its steps spread over spread (see pace); Run spreads them over half
// the interval.
func (p *Pruner) once(ctx context.Context, spread time.Duration) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ready.Load() {
		// Apply what earlier leaders committed (cursors, an unfinished prune) first,
		// once per leadership.
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.cfg.Store.WaitForLeadership(bctx)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("retention: waiting for leadership barrier: %w", err)
		}
		p.ready.Store(true)
		// Started after the barrier: every prune an earlier leader committed is applied.
		p.fmu.Lock()
		p.follower = nil
		if p.cfg.CompactKeys > 0 {
			p.follower = newCompactFollower(p.cfg.CompactKeys)
		}
		p.fmu.Unlock()
	}
	l := p.cfg.Store.Ledger()
	ret, err := Load(l)
	if err != nil {
		return 0, err
	}
	hold, why, err := p.hold(l)
	if err != nil {
		return 0, err
	}
	m, err := Compute(l, ret, hold, p.cfg.Now())
	if err != nil {
		return 0, err
	}
	if why != "" && why != p.held {
		p.log.Info("retention: held back", "below_seq", hold, "by", why)
	}
	p.held = why
	if err := p.listCompacted(l, m); err != nil {
		return 0, err
	}
	n := toPrune(l, m)
	per := stepSize(n, p.cfg.StepEvents, spread)
	m.MaxEvents = uint32(per)
	gap := pace(n, per, spread)
	var total uint64
	for step := 0; ; step++ {
		if step > 0 && !wait(ctx, gap) {
			return total, ctx.Err()
		}
		need, err := l.PruneNeeded(m)
		if err != nil || !need {
			return total, err
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := p.cfg.Store.Propose(pctx, storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER, m)
		cancel()
		if err != nil {
			return total, fmt.Errorf("retention: propose PRUNE_LEDGER: %w", err)
		}
		r, ok := res.(*storev1.PruneResult)
		if !ok {
			return total, fmt.Errorf("retention: PRUNE_LEDGER returned %T", res)
		}
		if r.GetError() != "" {
			return total, fmt.Errorf("retention: PRUNE_LEDGER refused: %s", r.GetError())
		}
		total += r.GetEventsPruned()
		if !r.GetMore() {
			return total, nil
		}
		low, _ := l.LowWater()
		trimListed(m, low)
		if !p.cfg.Store.IsLeader() {
			return total, errors.New("retention: leadership lost during a prune in steps; the new leader resumes it")
		}
	}
}

// followEvery is how often the leader reads the log's new events into its follower of
// compact keys between prunes: a second's events at a time, where reading an
// interval's worth right before each prune was a burst of work on the leader.
const followEvery = time.Second

// runFollow keeps this leadership's follower of compact keys up with the log, every
// followEvery, until ctx is done.
func (p *Pruner) runFollow(ctx context.Context) {
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !p.ready.Load() || !p.cfg.Store.IsLeader() {
			continue
		}
		// The types the last prune asked for (none before this leadership's first): a
		// change of the Retention document reaches the follower with the next prune.
		p.fmu.Lock()
		if p.follower != nil {
			p.follow(p.cfg.Store.Ledger(), p.follower.types)
		}
		p.fmu.Unlock()
	}
}

// follow reads the log's new events of types into this leadership's follower, if it
// has one (under fmu), and reports whether it is usable. A failure is logged once:
// prunes then compact every key they remove.
func (p *Pruner) follow(l *ledger.Ledger, types []string) bool {
	if p.follower == nil || len(types) == 0 {
		return false
	}
	err := p.follower.follow(l, types, followBudget)
	p.stats.keys.Store(int64(p.follower.size()))
	if err != nil {
		if err.Error() != p.followed {
			p.followed = err.Error()
			p.log.Warn("retention: compacting every pruned key", "err", err)
		}
		return false
	}
	return true
}

// listCompacted sets m's compact_seqs from the follower, when it can list them (see
// compactFollower); else m compacts every key it prunes. A failure to follow the log is
// logged, not returned: the prune goes on without the list.
func (p *Pruner) listCompacted(l *ledger.Ledger, m *storev1.PruneLedger) error {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	following := p.follow(l, slices.Sorted(slices.Values(m.GetCompact())))
	if need, err := l.PruneNeeded(m); err != nil || !need {
		return err // the metric keeps what the last prune did
	}
	p.stats.listed.Store(-1)
	if !following || !p.canList() {
		return nil
	}
	lw, err := l.Retention()
	if err != nil {
		return err
	}
	seqs, ok := p.follower.list(m, lw)
	p.stats.keys.Store(int64(p.follower.size()))
	if !ok {
		return nil
	}
	m.CompactListed, m.CompactSeqs = true, seqs
	p.stats.listed.Store(int64(len(seqs)))
	return nil
}

// canList asks Config.CanList whether a prune may list what it compacts (under fmu).
// Its reason is logged when it changes.
func (p *Pruner) canList() bool {
	if p.cfg.CanList == nil {
		return true
	}
	err := p.cfg.CanList()
	switch {
	case err == nil && p.unlisted != "":
		p.unlisted = ""
		p.log.Info("retention: prunes list the events they compact again; every node applies a listed prune")
	case err != nil && err.Error() != p.unlisted:
		p.unlisted = err.Error()
		p.log.Warn("retention: compacting every pruned key until every node applies a listed prune", "err", err)
	}
	return err == nil
}

// runAhead calls Ahead every Interval until ctx is done.
func (p *Pruner) runAhead(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.ahead(ctx, p.cfg.Interval/2)
		switch {
		case err == nil:
			lastErr = ""
		case ctx.Err() != nil:
			return
		case err.Error() != lastErr: // logged once while it repeats
			lastErr = err.Error()
			p.log.Warn("retention: archiving ahead of the prune failed; the prune archives what is left, retried at the next interval", "err", err)
		}
	}
}

// Ahead archives, on this node, the events the prune will remove within the next
// Interval: those below the cutoffs computed at now + Interval (held back like the
// prune's). Pruning stays correct without it (the prune's Apply archives whatever is
// not archived yet); it moves the archive's writes and fsyncs out of Apply, where they
// stalled every commit behind them. Nothing when Config.Archiver is nil.
func (p *Pruner) Ahead(ctx context.Context) error { return p.ahead(ctx, 0) }

// ahead is Ahead with its batches spread over spread (see pace); runAhead spreads them
// over half the interval.
func (p *Pruner) ahead(ctx context.Context, spread time.Duration) error {
	if p.cfg.Archiver == nil {
		return nil
	}
	l := p.cfg.Store.Ledger()
	ret, err := Load(l)
	if err != nil {
		return err
	}
	hold, _, err := p.hold(l)
	if err != nil {
		return err
	}
	m, err := Compute(l, ret, hold, p.cfg.Now().Add(p.cfg.Interval))
	if err != nil {
		return err
	}
	gap := pace(toPrune(l, m), aheadBatch, spread)
	for batch := 0; ; batch++ {
		if batch > 0 && !wait(ctx, gap) {
			return ctx.Err()
		}
		n, more, err := l.ArchiveAhead(ctx, p.cfg.Archiver, m, aheadBatch)
		if err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		if n > 0 {
			p.log.Debug("retention: archived ahead of the prune", "events", n, "more", more)
		}
		if !more {
			return nil
		}
	}
}

// Load reads the Retention document (DefaultRetention when none is applied).
func Load(l *ledger.Ledger) (routing.Retention, error) {
	rec, ok, err := l.Document(string(routing.KindRetention), routing.RetentionName)
	if err != nil {
		return routing.Retention{}, fmt.Errorf("retention: read the Retention document: %w", err)
	}
	if !ok || rec.GetDeleted() {
		return routing.DefaultRetention(), nil
	}
	d, err := routing.FromRecord(rec)
	if err != nil {
		return routing.Retention{}, fmt.Errorf("retention: %w", err)
	}
	return routing.EffectiveRetention(d.Retention), nil
}

// hold is the lowest seq a prune may not pass: the cursor of every webhook and agent
// destination and the next seq of every replay in progress (0 when nothing holds), and
// what holds it.
func (p *Pruner) hold(l *ledger.Ledger) (uint64, string, error) {
	var (
		hold uint64
		why  string
	)
	at := func(seq uint64, what string) {
		if hold == 0 || seq < hold {
			hold, why = seq, what
		}
	}
	if p.cfg.Plans != nil {
		plan, err := p.cfg.Plans.Plan()
		if err != nil {
			return 0, "", fmt.Errorf("retention: read the routing plan (destination cursors hold retention): %w", err)
		}
		for _, d := range plan.Destinations {
			if d.Kind != delivery.KindWebhook && d.Kind != delivery.KindAgent {
				continue
			}
			c, ok, err := l.DeliveryCursor(d.Name)
			if err != nil {
				return 0, "", err
			}
			seq := uint64(1) // not started: it delivers from the start
			if ok {
				seq = max(c.GetSeq(), 1)
			}
			at(seq, "destination "+d.Name)
		}
	}
	rps, err := l.Replays()
	if err != nil {
		return 0, "", err
	}
	for _, r := range rps {
		if !r.GetDone() {
			at(max(r.GetNextSeq(), 1), "replay "+r.GetReplay().GetId())
		}
	}
	return hold, why, nil
}

// Compute returns the PRUNE_LEDGER of retention r at now: per type, the first seq
// committed at or after now - keep (capped at hold, when not 0); the dedup cutoff,
// after the last id run committed before now - dedupWindow (runs record their commit
// time: their events may be gone). Only committed commit times are
// read, so any leader computing at the same time proposes the same cutoffs.
func Compute(l *ledger.Ledger, r routing.Retention, hold uint64, now time.Time) (*storev1.PruneLedger, error) {
	cut := func(keep time.Duration) (uint64, error) {
		s, err := l.SeqAtTime(now.Add(-keep))
		if err != nil {
			return 0, fmt.Errorf("retention: find the seq committed at %s: %w", now.Add(-keep).UTC().Format(time.RFC3339), err)
		}
		if hold != 0 {
			s = min(s, hold)
		}
		return s, nil
	}
	m := &storev1.PruneLedger{ComputedAt: timestamppb.New(now), Compact: slices.Clone(r.Compact)}
	var err error
	if m.DefaultBelow, err = cut(r.Default); err != nil {
		return nil, err
	}
	for _, t := range slices.Sorted(maps.Keys(r.Types)) {
		b, err := cut(r.Types[t])
		if err != nil {
			return nil, err
		}
		m.Types = append(m.Types, &storev1.PruneCutoff{Type: t, Below: b})
	}
	dedupAt := now.Add(-r.DedupWindow)
	if m.DedupBelow, err = l.DedupCutoff(dedupAt); err != nil {
		return nil, fmt.Errorf("retention: find the dedup cutoff: %w", err)
	}
	m.DedupAt = timestamppb.New(dedupAt)
	return m, nil
}
