// Package views keeps current state derived from the ledger on every node, leader and
// follower alike: inventory per (SKU, location), prices per (SKU, price list) and
// items. A goroutine follows the node's committed log (woken by the ledger's apply
// notifications, never inside Raft's Apply, so ingest does not wait for it), reads the
// events' bytes and decodes only inventory.level, price and item events. The same log
// gives the same views on every node: what is folded depends only on the events and
// their order, never on the node's clock (only Prices reads the clock, to pick the
// price valid now).
//
// Rules, per key (inventory: sku and location; price: sku, price list and valid_from;
// item: sku): an event replaces what the views hold unless its occurred_at is earlier
// than the held one's (an older event for a key never overwrites a newer one; with
// equal or unset times the later seq wins). A price whose validity ended before the
// commit time of a later price event of the same (sku, price list) is dropped.
package views

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Level is the newest inventory level of one SKU at one location.
type Level struct {
	SKU, Location                               string
	OnHand, Allocated, Available, UnitOfMeasure string // decimal strings as in the event
	Seq                                         uint64
	At                                          time.Time // ledger seq / commit time of the event it reflects
}

// PriceEntry is the price of one SKU in one price list.
type PriceEntry struct {
	SKU, PriceList, Currency, Amount string
	ValidFrom, ValidTo               time.Time // zero = open
	Seq                              uint64
	At                               time.Time
}

// ItemEntry is one item's master data.
type ItemEntry struct {
	SKU, Name, Description, UnitOfMeasure, GTIN string
	Seq                                         uint64
	At                                          time.Time
}

// Reader is what the views answer. *Views implements it.
type Reader interface {
	// Seq is the ledger seq the views reflect (every event up to it is folded in).
	Seq() uint64
	// WaitFor blocks until Seq() >= seq or ctx ends (read your writes).
	WaitFor(ctx context.Context, seq uint64) error
	Levels(skus []string, locations []string) []Level // nil locations = all
	Prices(skus []string, priceList string) []PriceEntry
	Items(after string, limit int, match func(sku string) bool) (items []ItemEntry, next string)
}

var _ Reader = (*Views)(nil)

// Types are the event types the views fold.
var Types = []string{canonical.TypeInventoryLevel, canonical.TypePrice, canonical.TypeItem}

// Options tune the views.
type Options struct {
	// Batch is how many events one read of the log folds under the write lock
	// (readers wait at most that long); 1024 when 0.
	Batch  int
	Logger *slog.Logger
	// Now is the clock Prices uses to pick the price valid now (time.Now when nil).
	Now func() time.Time
}

// Views is the state of one node's views. Run feeds it; the read methods are safe for
// concurrent use.
type Views struct {
	src    Source
	logger *slog.Logger
	batch  int
	now    func() time.Time

	mu    sync.RWMutex
	st    *state
	seq   atomic.Uint64
	waitM sync.Mutex
	wait  chan struct{} // closed and replaced when seq moves

	lag     lagTracker
	rebuild atomic.Int64 // nanoseconds the start-up rebuild took (0 while it runs)
	rebuilt atomic.Uint64
	merged  atomic.Uint64 // times a prune overtook the views and the base was merged
}

// New returns views over src; Run starts them.
func New(src Source, opts Options) *Views {
	if opts.Batch <= 0 {
		opts.Batch = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Views{src: src, logger: opts.Logger, batch: opts.Batch, now: opts.Now, st: newState(), wait: make(chan struct{})}
}

// Seq is the ledger seq the views reflect.
func (v *Views) Seq() uint64 { return v.seq.Load() }

// WaitFor blocks until Seq() >= seq or ctx ends.
func (v *Views) WaitFor(ctx context.Context, seq uint64) error {
	for {
		v.waitM.Lock()
		ch := v.wait
		v.waitM.Unlock()
		if cur := v.Seq(); cur >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("views: waiting for seq %d (views are at %d): %w", seq, v.Seq(), ctx.Err())
		case <-ch:
		}
	}
}

func (v *Views) setSeq(s uint64) {
	v.seq.Store(s)
	v.waitM.Lock()
	close(v.wait)
	v.wait = make(chan struct{})
	v.waitM.Unlock()
}

// Run follows the log until ctx ends: it folds the compacted base and the log from
// the source's first seq (the start-up rebuild), then each batch of newly committed
// events as the ledger reports them. A read error is logged and retried after the
// next apply (or a second); the views keep answering from what they hold.
func (v *Views) Run(ctx context.Context) error {
	go v.lag.probe(ctx, v.src)
	for {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.logger.Error("views stopped following the ledger; rebuilding them from the ledger in a second", "err", err, "views_seq", v.Seq())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// errRewound says the ledger's log was replaced (a snapshot restore): the views are
// rebuilt from scratch.
var errRewound = errors.New("views: a snapshot was restored into the ledger")

// follow rebuilds the views from the source, then follows it; it returns when ctx
// ends or the views must be rebuilt.
func (v *Views) follow(ctx context.Context) error {
	start := time.Now()
	v.rebuild.Store(0)
	restores := v.src.Restores()
	st := newState()
	from, err := v.src.Base(Types, func(ev *eventv1.CommittedEvent) error { return foldCompacted(st, ev) })
	if err != nil {
		return fmt.Errorf("views: read the ledger's compacted base: %w", err)
	}
	v.mu.Lock()
	v.st = st
	v.mu.Unlock()
	v.setSeq(max(from, 1) - 1)
	var events uint64
	rebuilding := true
	for {
		ch := v.src.Changed()
		// Not LastSeq() < Seq(): an Apply's events are readable a moment before
		// LastSeq moves past them, and on a busy node that moment was long enough
		// for a false alarm and a full rebuild every few minutes (the soaks of
		// 2026-12-05).
		if v.src.Restores() != restores {
			return errRewound
		}
		n, err := v.step()
		if errors.Is(err, ledger.ErrPruned) {
			// A prune overtook the views (a node that fell behind, or a rebuild
			// racing the prune from the low-water mark). Rebuilding from scratch
			// starts at the low-water mark again, right where the next prune step
			// removes events, and on a busy node lost that race again and again. The
			// events skipped were pruned, and the compacted base holds the newest of
			// each key among them: merge it (an entry holding a newer event stays)
			// and go on from the new mark.
			if err := v.mergeBase(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		events += uint64(n)
		if n >= v.batch {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if rebuilding {
			rebuilding = false
			d := time.Since(start)
			v.rebuilt.Store(events)
			v.rebuild.Store(max(int64(d), 1))
			v.logger.Info("views built from the ledger", "events", events, "seq", v.Seq(), "took", d.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Merges is how often a prune overtook the views and they merged the compacted base
// instead of rebuilding.
func (v *Views) Merges() uint64 { return v.merged.Load() }

// foldCompacted folds an event of the compacted base into st.
func foldCompacted(st *state, ev *eventv1.CommittedEvent) error {
	b, err := proto.Marshal(ev.GetEvent())
	if err != nil {
		return fmt.Errorf("views: encode compacted event %d: %w", ev.GetSeq(), err)
	}
	return st.fold(ledger.RawEvent{Seq: ev.GetSeq(), CommittedAt: ev.GetCommittedAt().AsTime(), Event: b})
}

// mergeBase merges the compacted base into the views, each event only where the views
// hold an older one of its key or none, and moves Seq() to where the log now starts.
func (v *Views) mergeBase() error {
	v.mu.Lock()
	v.st.merging = true
	from, err := v.src.Base(Types, func(ev *eventv1.CommittedEvent) error {
		if ev.GetSeq() <= v.Seq() {
			return nil // the views folded it from the log
		}
		return foldCompacted(v.st, ev)
	})
	v.st.merging = false
	v.mu.Unlock()
	if err != nil {
		return fmt.Errorf("views: merge the ledger's compacted base after a prune overtook the views at seq %d: %w", v.Seq(), err)
	}
	v.merged.Add(1)
	v.logger.Warn("views: a prune overtook the views; merged the compacted base and going on from the low-water mark", "views_seq", v.Seq(), "low_water", from)
	if from-1 > v.Seq() {
		v.setSeq(from - 1)
	}
	return nil
}

// step folds up to one batch of events after Seq() and returns how many it read.
func (v *Views) step() (int, error) {
	from := v.Seq() + 1
	n := 0
	v.mu.Lock()
	next, err := v.src.ScanRaw(from, v.batch, func(ev ledger.RawEvent) error {
		n++
		return v.st.fold(ev)
	})
	v.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("views: read the ledger from seq %d: %w", from, err)
	}
	if next > from {
		v.setSeq(next - 1)
		v.lag.folded(next-1, time.Now())
	}
	return n, nil
}

// Levels returns the levels of skus at locations (every location when locations is
// nil), sorted by SKU as given, then location.
func (v *Views) Levels(skus []string, locations []string) []Level {
	v.mu.RLock()
	defer v.mu.RUnlock()
	st := v.st
	var locs map[uint32]bool
	if locations != nil {
		locs = make(map[uint32]bool, len(locations))
		for _, l := range locations {
			if id, ok := st.strs.lookup(l); ok {
				locs[id] = true
			}
		}
	}
	var out []Level
	for _, sku := range skus {
		d := st.sku(sku)
		if d == nil {
			continue
		}
		for i := range d.levels {
			l := &d.levels[i]
			if locs != nil && !locs[l.loc] {
				continue
			}
			on, alloc, avail := st.quantities(l)
			out = append(out, Level{
				SKU: sku, Location: st.strs.get(l.loc),
				OnHand: on, Allocated: alloc, Available: avail,
				UnitOfMeasure: st.strs.get(l.uom), Seq: l.seq, At: fromNanos(l.at),
			})
		}
	}
	return out
}

// Prices returns, for each of skus that has one, its price in priceList valid now:
// among the prices whose validity holds now, the one with the latest valid_from (the
// latest seq among equal ones).
func (v *Views) Prices(skus []string, priceList string) []PriceEntry {
	now := v.now().UnixNano()
	v.mu.RLock()
	defer v.mu.RUnlock()
	st := v.st
	list, ok := st.strs.lookup(priceList)
	if !ok {
		return nil
	}
	var out []PriceEntry
	for _, sku := range skus {
		d := st.sku(sku)
		if d == nil {
			continue
		}
		var best *price
		for i := range d.prices {
			p := &d.prices[i]
			if p.list != list || !p.validAt(now) {
				continue
			}
			if best == nil || p.from > best.from || (p.from == best.from && p.seq > best.seq) {
				best = p
			}
		}
		if best != nil {
			out = append(out, PriceEntry{
				SKU: sku, PriceList: priceList, Currency: st.strs.get(best.cur), Amount: best.amount,
				ValidFrom: fromNanos(best.from), ValidTo: fromNanos(best.to), Seq: best.seq, At: fromNanos(best.at),
			})
		}
	}
	return out
}

// Items returns up to limit items with a SKU after after (in SKU order) for which match
// (nil: all) is true, and the SKU to pass as after for the next page ("" at the end).
// limit <= 0 means 100.
func (v *Views) Items(after string, limit int, match func(sku string) bool) ([]ItemEntry, string) {
	if limit <= 0 {
		limit = 100
	}
	v.mu.RLock()
	if len(v.st.itemNew) > 0 {
		v.mu.RUnlock()
		v.mu.Lock()
		v.st.mergeItems()
		v.mu.Unlock()
		v.mu.RLock()
	}
	defer v.mu.RUnlock()
	st := v.st
	order := st.itemOrder
	i, _ := slices.BinarySearch(order, after)
	if i < len(order) && order[i] == after {
		i++
	}
	var out []ItemEntry
	for ; i < len(order); i++ {
		sku := order[i]
		if match != nil && !match(sku) {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].SKU
		}
		it := st.sku(sku).item
		out = append(out, ItemEntry{SKU: sku, Name: it.name, Description: it.desc, UnitOfMeasure: st.strs.get(it.uom), GTIN: it.gtin, Seq: it.seq, At: fromNanos(it.at)})
	}
	return out, ""
}

// Stats describes the views.
type Stats struct {
	Seq                   uint64
	Levels, Prices, Items int
	// Lag: from the ledger applying an entry on this node to the views having folded
	// it, over the last samples.
	LagSamples             int
	LagP50, LagP99, LagMax time.Duration
	// Rebuild is how long the start-up rebuild took (0 while it runs) and how many
	// events it read.
	Rebuild       time.Duration
	RebuildEvents uint64
}

// Stats returns the views' counters and lag.
func (v *Views) Stats() Stats {
	v.mu.RLock()
	s := Stats{Seq: v.Seq(), Levels: v.st.nLevels, Prices: v.st.nPrices, Items: len(v.st.itemOrder) + len(v.st.itemNew)}
	v.mu.RUnlock()
	s.LagSamples, s.LagP50, s.LagP99, s.LagMax = v.lag.quantiles()
	s.Rebuild, s.RebuildEvents = time.Duration(v.rebuild.Load()), v.rebuilt.Load()
	return s
}

// Equal reports whether two views hold the same state (their entries, not their
// memory layout); tests compare nodes with it.
func Equal(a, b *Views) (bool, string) {
	da, db := a.dump(), b.dump()
	if da == db {
		return true, ""
	}
	return false, firstDiff(da, db)
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(la), len(lb)) {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: %q != %q", i+1, x, y)
		}
	}
	return ""
}

// dump writes every entry in SKU order, for comparisons.
func (v *Views) dump() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	st := v.st
	skus := slices.Clone(st.skuNames)
	slices.Sort(skus)
	var b strings.Builder
	fmt.Fprintf(&b, "seq %d\n", v.Seq())
	for _, sku := range skus {
		d := st.sku(sku)
		for i := range d.levels {
			l := &d.levels[i]
			on, alloc, avail := st.quantities(l)
			fmt.Fprintf(&b, "level %q %q %q %q %q %q %d %d %d\n", sku, st.strs.get(l.loc), on, alloc, avail, st.strs.get(l.uom), l.seq, l.at, l.occ)
		}
		ps := slices.Clone(d.prices)
		slices.SortFunc(ps, func(x, y price) int {
			return cmp.Or(strings.Compare(st.strs.get(x.list), st.strs.get(y.list)), cmp.Compare(x.from, y.from))
		})
		for _, p := range ps {
			fmt.Fprintf(&b, "price %q %q %q %q %d %d %d %d %d\n", sku, st.strs.get(p.list), st.strs.get(p.cur), p.amount, p.from, p.to, p.seq, p.at, p.occ)
		}
		if it := d.item; it != nil {
			fmt.Fprintf(&b, "item %q %q %q %q %q %d %d %d\n", sku, it.name, it.desc, st.strs.get(it.uom), it.gtin, it.seq, it.at, it.occ)
		}
	}
	return b.String()
}

// Item returns the item with sku, if the views hold it (the partner API checks the SKUs
// of an order with it).
func (v *Views) Item(sku string) (ItemEntry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	d := v.st.sku(sku)
	if d == nil || d.item == nil {
		return ItemEntry{}, false
	}
	it := d.item
	return ItemEntry{SKU: sku, Name: it.name, Description: it.desc, UnitOfMeasure: v.st.strs.get(it.uom), GTIN: it.gtin, Seq: it.seq, At: fromNanos(it.at)}, true
}
