// Package diskguard stops a control plane cluster taking in new events before a node's
// disk is full.
//
// The ledger's Badger writes through memory maps, so a node whose disk fills does not
// get an error it could refuse a write with: it ends with a fault. Every node samples
// the free space of its data dir's file system; a follower reports its sample to the
// leader every ReportEvery, and the leader refuses new events (agent batches, partner
// orders) while any node keeps less than its minimum free. Everything else goes on:
// deliveries, retention (which frees space), admin commands. Agents keep refused events
// in their outboxes and send them again once the guard lets them through.
package diskguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// DefaultMinFree is the free disk a node keeps by default (crossdock server
// --min-free-disk): room for a memtable flush, a compaction and a value log file
// with some to spare. docs/operations.md says how to size it.
const DefaultMinFree = 1 << 30

// ReportEvery is how often a follower sends its free space to the leader, and
// ReportTTL how long the leader keeps a report that is not renewed: a node that stops
// reporting (removed, down, or on a leader that changed) stops holding writes back.
const (
	ReportEvery = 5 * time.Second
	ReportTTL   = 3 * ReportEvery
)

// ErrLow is wrapped by the error Check returns while a node is short of disk.
var ErrLow = errors.New("disk space low")

// LowError names the node short of disk.
type LowError struct {
	Node      string
	Free, Min uint64
}

func (e *LowError) Error() string {
	return fmt.Sprintf("%s: node %s has %d MiB free and keeps %d MiB free (--min-free-disk); new events are refused until retention or an operator frees disk on it",
		ErrLow, e.Node, e.Free>>20, e.Min>>20)
}

func (e *LowError) Unwrap() error { return ErrLow }

// Options configure a Guard.
type Options struct {
	// Node is this node's id; Dir the data dir whose file system is sampled.
	Node string
	Dir  string
	// MinFree is the free space to keep; 0 means DefaultMinFree, negative turns the
	// guard off (it still samples, for the metrics and cluster status).
	MinFree int64
	// Free returns the free bytes of Dir's file system; nil means statfs. Tests
	// replace it to inject a full disk (fault injection).
	Free func() (uint64, error)
	// Interval is how often Run samples (1s when 0).
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Status is one node's free disk as last sampled or reported.
type Status struct {
	Node      string
	Free, Min uint64
	// Off: the node's guard is off (--min-free-disk -1); it never holds writes back.
	Off bool
	At  time.Time
}

// Low reports whether the node keeps less free than its minimum.
func (s Status) Low() bool { return !s.Off && s.Free < s.Min }

// Guard samples this node's free disk and keeps the followers' reports.
type Guard struct {
	opts Options

	mu       sync.Mutex
	local    Status
	known    bool  // local has been sampled
	localErr error // the last sample failed (free space unknown: not low)
	peers    map[string]Status
}

// New returns a Guard; Sample or Run take its first sample.
func New(o Options) *Guard {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Free == nil {
		dir := o.Dir
		o.Free = func() (uint64, error) { return fsutil.FreeBytes(dir) }
	}
	return &Guard{opts: o, peers: map[string]Status{}}
}

func (g *Guard) min() (uint64, bool) {
	switch {
	case g.opts.MinFree < 0:
		return 0, true
	case g.opts.MinFree == 0:
		return DefaultMinFree, false
	}
	return uint64(g.opts.MinFree), false
}

// Sample reads this node's free space now and returns it. A node going short of disk,
// or back above its minimum, is logged.
func (g *Guard) Sample() (Status, error) {
	free, err := g.opts.Free()
	min, off := g.min()
	now := g.opts.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if g.localErr == nil {
			g.opts.Logger.Warn("free disk space unknown; the disk guard lets writes through", "dir", g.opts.Dir, "err", err)
		}
		g.localErr = err
		return g.local, err
	}
	was := g.known && g.local.Low()
	g.local = Status{Node: g.opts.Node, Free: free, Min: min, Off: off, At: now}
	g.known, g.localErr = true, nil
	switch low := g.local.Low(); {
	case low && !was:
		g.opts.Logger.Error("disk space low: refusing new events while this node keeps less than its minimum free",
			"dir", g.opts.Dir, "free_mib", free>>20, "min_free_mib", min>>20)
	case !low && was:
		g.opts.Logger.Info("disk space back above the minimum free", "dir", g.opts.Dir, "free_mib", free>>20, "min_free_mib", min>>20)
	}
	return g.local, nil
}

// Run samples every Interval until ctx is done.
func (g *Guard) Run(ctx context.Context) {
	t := time.NewTicker(g.opts.Interval)
	defer t.Stop()
	for {
		_, _ = g.Sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Local returns this node's last sample (ok false before the first).
func (g *Guard) Local() (Status, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.local, g.known
}

// Record keeps a follower's report (on the leader). A report of this node is ignored.
func (g *Guard) Record(s Status) {
	if s.Node == "" || s.Node == g.opts.Node {
		return
	}
	s.At = g.opts.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.peers[s.Node]; s.Low() && (!ok || !old.Low() || g.expired(old)) {
		g.opts.Logger.Error("disk space low on another node: refusing new events", "node", s.Node, "free_mib", s.Free>>20, "min_free_mib", s.Min>>20)
	}
	g.peers[s.Node] = s
}

func (g *Guard) expired(s Status) bool { return g.opts.Now().Sub(s.At) > ReportTTL }

// Nodes returns this node's sample and the reports not expired, by node id.
func (g *Guard) Nodes() map[string]Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]Status, len(g.peers)+1)
	for id, s := range g.peers {
		if g.expired(s) {
			delete(g.peers, id)
			continue
		}
		out[id] = s
	}
	if g.known {
		out[g.opts.Node] = g.local
	}
	return out
}

// Check returns a *LowError (wrapping ErrLow) while this node or a node that reported
// within ReportTTL keeps less than its minimum free, else nil. Several short nodes:
// the one with the least free.
func (g *Guard) Check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var worst *Status
	consider := func(s Status) {
		if s.Low() && (worst == nil || s.Free < worst.Free) {
			worst = &s
		}
	}
	if g.known && g.localErr == nil {
		consider(g.local)
	}
	for _, s := range g.peers {
		if !g.expired(s) {
			consider(s)
		}
	}
	if worst == nil {
		return nil
	}
	return &LowError{Node: worst.Node, Free: worst.Free, Min: worst.Min}
}
