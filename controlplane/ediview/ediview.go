// Package ediview is the control plane's view of EDI interchanges: it follows the
// node's committed log, folds the edi.interchange events the EDI connectors publish
// (plugins/edi) and answers EDIService (proto/crossdock/admin/v1/edi.proto): every
// trading partner's interchanges with their acknowledgement state, and the X12 chain
// of an order (850 → 997/999 → 855 → 856 → 810).
//
// Each event carries the whole state of one interchange (partner, direction, ISA13);
// the newest replaces the held one unless it knows of fewer acknowledgements (so an
// older state that arrives late never hides an acknowledgement). Overdue is computed
// at read time from the ack due time in the event and the clock, so an outbound group
// whose 997/999 never comes shows overdue without any event.
package ediview

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/views"
	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Interchange is one interchange as the view holds it.
type Interchange struct {
	IC          *eventv1.EdiInterchange
	Seq         uint64
	CommittedAt time.Time
}

func (i *Interchange) key() string {
	return i.IC.GetPartner() + ":" + i.IC.GetDirection() + ":" + normControl(i.IC.GetControl())
}

func (i *Interchange) at() time.Time {
	if t := i.IC.GetAt(); t != nil {
		return t.AsTime()
	}
	return i.CommittedAt
}

// View is the EDI view of one node. Run feeds it; the read methods are safe for
// concurrent use.
type View struct {
	src    views.Source
	logger *slog.Logger
	now    func() time.Time

	mu    sync.RWMutex
	byKey map[string]*Interchange
	seq   uint64 // every event below it is folded
}

// New returns a view over src (views.LedgerSource of the node's ledger); Run starts it.
func New(src views.Source, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.Default()
	}
	return &View{src: src, logger: logger, now: time.Now, byKey: map[string]*Interchange{}, seq: 1}
}

// Types are the event types the view folds (its views.LedgerSource's Types).
var Types = []string{canonical.TypeEdiInterchange}

// Run follows the log until ctx ends. When a snapshot is restored into the ledger it
// starts over from it; when a prune overtakes it (a node that fell behind, or one that
// started before the snapshot it joined with was restored), it folds the compacted
// base and goes on from the low-water mark, as the views do (views.Views.follow).
func (v *View) Run(ctx context.Context) error {
	for {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.logger.Warn("edi view: starting over from the ledger in a second", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// follow builds the view from the ledger and follows it until ctx ends or a snapshot
// is restored.
func (v *View) follow(ctx context.Context) error {
	restores := v.src.Restores()
	v.mu.Lock()
	v.byKey, v.seq = map[string]*Interchange{}, 1
	v.mu.Unlock()
	if err := v.mergeBase(); err != nil {
		return err
	}
	for {
		changed := v.src.Changed()
		if v.src.Restores() != restores {
			return errors.New("ediview: a snapshot was restored into the ledger")
		}
		v.mu.RLock()
		from := v.seq
		v.mu.RUnlock()
		next, err := v.src.ScanRaw(from, 1024, v.foldRaw)
		v.mu.Lock()
		if next > v.seq {
			v.seq = next
		}
		v.mu.Unlock()
		if errors.Is(err, ledger.ErrPruned) {
			if err := v.mergeBase(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				v.logger.Warn("edi view: reading the ledger failed; retrying in a second", "err", err, "seq", from)
			}
			changed = nil // a second, not the next apply: the read failed, not the log
		} else if next > from {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// mergeBase folds the events of the ledger's compacted base the view has not folded from
// the log, and moves the view to where the log now starts.
func (v *View) mergeBase() error {
	v.mu.RLock()
	seq := v.seq
	v.mu.RUnlock()
	from, err := v.src.Base(Types, func(ev *eventv1.CommittedEvent) error {
		if ev.GetSeq() >= seq {
			v.foldEvent(ev.GetEvent(), ev.GetSeq(), ev.GetCommittedAt().AsTime())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ediview: read the ledger's compacted base: %w", err)
	}
	v.mu.Lock()
	v.seq = max(v.seq, from, 1)
	v.mu.Unlock()
	return nil
}

var typeBytes = []byte(canonical.TypeEdiInterchange)

func (v *View) foldRaw(ev ledger.RawEvent) error {
	if !bytes.Contains(ev.Event, typeBytes) {
		return nil
	}
	e := &eventv1.Event{}
	if err := proto.Unmarshal(ev.Event, e); err != nil {
		v.logger.Warn("edi view: undecodable event skipped", "seq", ev.Seq, "err", err)
		return nil
	}
	v.foldEvent(e, ev.Seq, ev.CommittedAt)
	return nil
}

// acks counts what an interchange state knows of acknowledgements.
func acks(ic *eventv1.EdiInterchange) int {
	n := 0
	for _, g := range ic.GetGroups() {
		if g.GetAck() != "" {
			n++
		}
	}
	if ic.GetTa1() != "" {
		n++
	}
	return n
}

func (v *View) foldEvent(e *eventv1.Event, seq uint64, at time.Time) {
	ic := e.GetEdiInterchange()
	if ic == nil || e.GetType() != canonical.TypeEdiInterchange {
		return
	}
	in := &Interchange{IC: ic, Seq: seq, CommittedAt: at}
	k := in.key()
	v.mu.Lock()
	defer v.mu.Unlock()
	if old := v.byKey[k]; old != nil && acks(ic) < acks(old.IC) {
		return
	}
	v.byKey[k] = in
}

// Seq is the seq after the last event the view has folded.
func (v *View) Seq() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.seq
}

func normControl(c string) string {
	c = strings.TrimLeft(strings.TrimSpace(c), "0")
	if c == "" {
		return "0"
	}
	return c
}

// GroupState is the acknowledgement state of a group at now: for an outbound group
// the partner's 997/999 status (A, E, P, R), "overdue" once its due time passed
// without one, "pending" before, "none" when none is expected; for an inbound group
// the status of the acknowledgement we sent ("" for groups not acknowledged, such as
// the partner's 997s).
func GroupState(ic *eventv1.EdiInterchange, g *eventv1.EdiGroup, now time.Time) string {
	switch {
	case g.GetAck() != "":
		return g.GetAck()
	case ic.GetDirection() != "out" || g.GetFunctionalId() == "FA":
		return ""
	case g.GetAckDue() == nil:
		return "none"
	case now.After(g.GetAckDue().AsTime()):
		return "overdue"
	}
	return "pending"
}

// rank orders states from best to worst for an interchange's overall state.
var rank = map[string]int{"": 0, "none": 1, "A": 2, "P": 3, "pending": 4, "E": 5, "R": 6, "overdue": 7}

// State is an interchange's state at now: "rejected" for a refused inbound one, else
// the worst of its groups' states (overdue, R, E, pending, P, A, none), or its status
// (accepted, sent) when no group has one.
func State(ic *eventv1.EdiInterchange, now time.Time) string {
	if ic.GetStatus() == "rejected" {
		return "rejected"
	}
	worst := ""
	for _, g := range ic.GetGroups() {
		if s := GroupState(ic, g, now); rank[s] > rank[worst] {
			worst = s
		}
	}
	if worst == "" || worst == "none" {
		return ic.GetStatus()
	}
	return worst
}

// Filter selects interchanges for List.
type Filter struct {
	Partner   string // "" all
	Order     string // a Crossdock order id or a purchase order number carried by a set
	State     string // as State returns it, or a group's state
	Direction string // "in", "out" or ""
}

func (f Filter) match(ic *eventv1.EdiInterchange, now time.Time) bool {
	if f.Partner != "" && ic.GetPartner() != f.Partner || f.Direction != "" && ic.GetDirection() != f.Direction {
		return false
	}
	if f.Order != "" && !carries(ic, f.Order) {
		return false
	}
	if f.State != "" && State(ic, now) != f.State {
		found := false
		for _, g := range ic.GetGroups() {
			found = found || GroupState(ic, g, now) == f.State
		}
		if !found {
			return false
		}
	}
	return true
}

func carries(ic *eventv1.EdiInterchange, order string) bool {
	for _, g := range ic.GetGroups() {
		for _, s := range g.GetSets() {
			if s.GetOrder() == order || s.GetPurchaseOrderNumber() == order {
				return true
			}
		}
	}
	return false
}

// List returns the interchanges f selects, newest first (by the time they were
// received or sent), at most limit (100 when <= 0) after the page token, and the token
// of the next page ("" on the last).
func (v *View) List(f Filter, limit int, token string) ([]*Interchange, string, error) {
	if limit <= 0 {
		limit = 100
	}
	var afterAt int64
	var afterKey string
	if token != "" {
		at, k, ok := strings.Cut(token, "|")
		n, err := strconv.ParseInt(at, 10, 64)
		if !ok || err != nil {
			return nil, "", fmt.Errorf("ediview: page token %q is not one this service returned; start again without it", token)
		}
		afterAt, afterKey = n, k
	}
	now := v.now()
	v.mu.RLock()
	var all []*Interchange
	for _, in := range v.byKey {
		if f.match(in.IC, now) {
			all = append(all, in)
		}
	}
	v.mu.RUnlock()
	less := func(a, b *Interchange) int {
		if c := cmp.Compare(b.at().UnixNano(), a.at().UnixNano()); c != 0 {
			return c
		}
		return cmp.Compare(a.key(), b.key())
	}
	slices.SortFunc(all, less)
	if token != "" {
		i := 0
		for i < len(all) && (all[i].at().UnixNano() > afterAt || all[i].at().UnixNano() == afterAt && all[i].key() <= afterKey) {
			i++
		}
		all = all[i:]
	}
	next := ""
	if len(all) > limit {
		all = all[:limit]
		last := all[limit-1]
		next = strconv.FormatInt(last.at().UnixNano(), 10) + "|" + last.key()
	}
	return all, next, nil
}

// Step is one transaction set of an order's chain.
type Step struct {
	Set, Partner, Direction, Interchange, GroupControl, SetControl, PO, State, File string
	At, AckAt, AckDue                                                               time.Time
}

// chainOrder puts the sets of an order's chain in their business order.
var chainOrder = map[string]int{"850": 0, "997": 1, "999": 1, "855": 2, "856": 3, "810": 4}

// OrderChain returns the X12 chain of an order (a Crossdock order id or a purchase
// order number) at now: each 850 received with our 997/999 for its group, then each
// 855, 856 and 810 sent with the partner's acknowledgement state (A, E, P, R, pending
// or overdue), in that order and by time within a set type.
func (v *View) OrderChain(order string) []Step {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	var steps []Step
	for _, in := range v.byKey {
		ic := in.IC
		for _, g := range ic.GetGroups() {
			for _, s := range g.GetSets() {
				if s.GetOrder() != order && s.GetPurchaseOrderNumber() != order {
					continue
				}
				st := Step{Set: s.GetId(), Partner: ic.GetPartner(), Direction: ic.GetDirection(), Interchange: ic.GetControl(),
					GroupControl: g.GetControl(), SetControl: s.GetControl(), PO: s.GetPurchaseOrderNumber(), File: ic.GetFile(), At: in.at()}
				if t := g.GetAckAt(); t != nil {
					st.AckAt = t.AsTime()
				}
				if t := g.GetAckDue(); t != nil {
					st.AckDue = t.AsTime()
				}
				if ic.GetDirection() == "out" {
					st.State = GroupState(ic, g, now)
					if s.GetStatus() != "" && g.GetAck() != "" {
						st.State = s.GetStatus()
					}
					steps = append(steps, st)
					continue
				}
				st.State = s.GetStatus()
				steps = append(steps, st)
				if g.GetAck() != "" && ic.GetAckControl() != "" {
					kind := cmp.Or(g.GetAckKind(), "997")
					steps = append(steps, Step{Set: kind, Partner: ic.GetPartner(), Direction: "out", Interchange: ic.GetAckControl(),
						GroupControl: g.GetControl(), SetControl: s.GetControl(), PO: s.GetPurchaseOrderNumber(), State: g.GetAck(), At: st.AckAt, AckAt: st.AckAt})
				}
			}
		}
	}
	slices.SortStableFunc(steps, func(a, b Step) int {
		if c := cmp.Compare(chainOrder[a.Set], chainOrder[b.Set]); c != 0 {
			return c
		}
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return cmp.Compare(a.Interchange, b.Interchange)
	})
	return steps
}

// OverdueByPartner counts, per trading partner, the outbound groups whose 997/999 is
// overdue now (for alerting).
func (v *View) OverdueByPartner() map[string]int {
	out := map[string]int{}
	v.eachOverdue("", func(partner string) { out[partner]++ })
	return out
}

// eachOverdue calls fn with the partner of every outbound group whose 997/999 is
// overdue now, only partner's when partner is not empty.
func (v *View) eachOverdue(partner string, fn func(partner string)) {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, in := range v.byKey {
		if partner != "" && in.IC.GetPartner() != partner {
			continue
		}
		for _, g := range in.IC.GetGroups() {
			if GroupState(in.IC, g, now) == "overdue" {
				fn(in.IC.GetPartner())
			}
		}
	}
}

// OverdueAcks counts partner's outbound groups whose 997/999 is overdue now: the
// ediAckOverdue alert condition (controlplane/alerts.EDIAcks).
func (v *View) OverdueAcks(partner string) int {
	if partner == "" {
		return 0
	}
	n := 0
	v.eachOverdue(partner, func(string) { n++ })
	return n
}
