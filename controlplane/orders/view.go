// Package orders keeps the status of every partner order on every node, leader and
// follower alike, derived from the ledger like controlplane/views: a goroutine follows
// the node's committed log and folds the order events (order, order.ack, shipment,
// invoice, order.cancel, sales.return and order.status). The same log gives the same
// view on every node: what is folded depends only on the events and their order.
//
// An order is created by its `order` event (payload Order with partner and
// purchase_order_number; its id is keys.order, else order_number). Later events join it
// by keys.order or their payload's order_number, which may be the Crossdock id or the
// ERP's number (learnt from the order.ack that accepted it). Each joined event is a
// step (type, status after it, commit time, ledger seq) and sets the status:
//
//	order                     received (a second order event for the id: a step only)
//	order.ack accepted        accepted, with the ERP's number
//	order.ack rejected        rejected, with the ERP's reason
//	shipment                  partially_shipped, or shipped once every line's shipped
//	                          quantity (summed over distinct shipment numbers) reaches
//	                          the ordered quantity
//	invoice                   invoiced
//	order.cancel requested    cancel_requested
//	order.cancel cancelled    cancelled
//	sales.return              return_requested
//
// order.status events (which Crossdock commits per change, see Notifier) are not steps:
// they record which status the partner was last told of.
package orders

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/views"
	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Status values.
const (
	StatusReceived         = "received"
	StatusAccepted         = "accepted"
	StatusRejected         = "rejected"
	StatusPartiallyShipped = "partially_shipped"
	StatusShipped          = "shipped"
	StatusInvoiced         = "invoiced"
	StatusCancelRequested  = "cancel_requested"
	StatusCancelled        = "cancelled"
	StatusReturnRequested  = "return_requested"
)

// Statuses lists every status, in the usual order of an order's life.
var Statuses = []string{StatusReceived, StatusAccepted, StatusRejected, StatusPartiallyShipped, StatusShipped,
	StatusInvoiced, StatusCancelRequested, StatusCancelled, StatusReturnRequested}

// Types are the event types the view folds.
var Types = []string{canonical.TypeOrder, canonical.TypeOrderAck, canonical.TypeShipment, canonical.TypeInvoice,
	canonical.TypeOrderCancel, canonical.TypeSalesReturn, canonical.TypeOrderStatus}

// Step is one event that moved an order.
type Step struct {
	Type   string // event type
	Status string // the order's status after it
	At     time.Time
	Seq    uint64
	Detail string
	// Agent is the agent that committed the event ("partner:<name>" for the partner API).
	Agent string
}

// Order is one order's state. The view hands out copies.
type Order struct {
	ID, Partner, PurchaseOrderNumber string
	Status                           string
	ERPOrderNumber                   string
	Message                          string
	// Seq and SubmittedAt are those of the order event; UpdatedAt and LastSeq of the
	// newest step.
	Seq         uint64
	SubmittedAt time.Time
	LastSeq     uint64
	UpdatedAt   time.Time
	// Event is the order event as committed (its payload is the Order).
	Event *eventv1.Event
	Steps []Step
	// Notified is the status of the newest order.status event for the order ("" when
	// none) and NotifiedSeq the cause seq it named.
	Notified    string
	NotifiedSeq uint64
	// Notices are the order.status events committed for the order (Status: the status
	// told; Seq, At: the order.status event's).
	Notices []Step

	shipped map[string]map[string]*big.Rat // shipment number -> line -> quantity
	// inBase: the compacted base holds the order event (it was folded from the base,
	// or retention compacted it since), so the view keeps the order after its event
	// left the log.
	inBase bool
}

func (o *Order) clone() *Order {
	c := *o
	c.Steps = slices.Clone(o.Steps)
	c.Notices = slices.Clone(o.Notices)
	c.shipped = nil
	return &c
}

// Source is what the view reads: a node's committed log, as views.LedgerSource with
// Types set to this package's Types reads it. Its ScanRaw refuses to read below the
// cutoff of those types with a ledger.PrunedError (the view would miss pruned events):
// the view then merges the compacted base and goes on, as the views do.
type Source interface {
	views.Source
	// TypesLowWater is the earliest seq from which the log holds every event of types.
	TypesLowWater(types []string) (uint64, time.Time, error)
	// CompactedHolds reports whether the compacted base holds an event of typ with keys.
	CompactedHolds(typ string, keys map[string]string) (bool, error)
}

// LedgerSource is the Source of a node's ledger.
func LedgerSource(l *ledger.Ledger) Source { return views.LedgerSource{L: l, Types: Types} }

// View is the order status of one node. Run feeds it; the read methods are safe for
// concurrent use.
type View struct {
	src    Source
	logger *slog.Logger
	batch  int

	mu        sync.RWMutex
	byID      map[string]*Order
	byERP     map[string]string   // ERP order number -> order id
	byPartner map[string][]string // partner -> order ids by seq (ascending)
	changed   map[string]bool     // ids whose status may differ from Notified

	// orderCut is the cutoff of order events the view last dropped orders below.
	orderCut uint64
	merged   atomic.Uint64

	seq   atomic.Uint64
	ready atomic.Bool // the rebuild at start is done
	waitM sync.Mutex
	wait  chan struct{}
}

// New returns a view over src (LedgerSource of the node's ledger); Run starts it.
func New(src Source, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.Default()
	}
	v := &View{src: src, logger: logger, batch: 1024, wait: make(chan struct{})}
	v.reset()
	return v
}

func (v *View) reset() {
	v.byID = map[string]*Order{}
	v.byERP = map[string]string{}
	v.byPartner = map[string][]string{}
	v.changed = map[string]bool{}
	v.orderCut = 0
}

// Ready reports whether the view has folded the whole log once since it started (or
// was last rebuilt).
func (v *View) Ready() bool { return v.ready.Load() }

// Seq is the ledger seq the view reflects.
func (v *View) Seq() uint64 { return v.seq.Load() }

func (v *View) setSeq(s uint64) {
	v.seq.Store(s)
	v.waitM.Lock()
	close(v.wait)
	v.wait = make(chan struct{})
	v.waitM.Unlock()
}

// WaitFor blocks until Seq() >= seq or ctx ends.
func (v *View) WaitFor(ctx context.Context, seq uint64) error {
	for {
		v.waitM.Lock()
		ch := v.wait
		v.waitM.Unlock()
		if v.Seq() >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("orders: waiting for seq %d (the order view is at %d): %w", seq, v.Seq(), ctx.Err())
		case <-ch:
		}
	}
}

// Run follows the log until ctx ends: it folds the compacted base and the log from its
// first seq (the rebuild at start), then each batch of newly committed events. A read
// error is logged and the view is rebuilt a second later.
func (v *View) Run(ctx context.Context) error {
	for {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.logger.Error("order view stopped following the ledger; rebuilding it from the ledger in a second", "err", err, "seq", v.Seq())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (v *View) follow(ctx context.Context) error {
	start := time.Now()
	restores := v.src.Restores()
	v.ready.Store(false)
	v.mu.Lock()
	v.reset()
	v.mu.Unlock()
	v.setSeq(0)
	if err := v.mergeBase(); err != nil {
		return err
	}
	rebuilding := true
	for {
		ch := v.src.Changed()
		// Restores, not LastSeq() < Seq(): see views.Views.follow.
		if v.src.Restores() != restores {
			return errors.New("orders: a snapshot was restored into the ledger")
		}
		n, err := v.step()
		if errors.Is(err, ledger.ErrPruned) {
			// A prune overtook the view (a node that fell behind): the events it
			// skipped are gone but for the compacted base; merge it and go on from
			// the new mark, as the views do (views.Views.follow).
			v.merged.Add(1)
			if err := v.mergeBase(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := v.dropPruned(); err != nil {
			return err
		}
		if n >= v.batch {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if rebuilding {
			rebuilding = false
			v.ready.Store(true)
			v.logger.Info("order view built from the ledger", "orders", v.Len(), "seq", v.Seq(), "took", time.Since(start).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// mergeBase folds the events of the compacted base the view has not folded from the
// log, in seq order, moves the view to where the log holds every event of its types,
// and drops the orders whose order event retention removed.
func (v *View) mergeBase() error {
	seen := v.Seq()
	var evs []*eventv1.CommittedEvent
	from, err := v.src.Base(Types, func(ev *eventv1.CommittedEvent) error {
		if ev.GetSeq() > seen {
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("orders: read the ledger's compacted base: %w", err)
	}
	slices.SortFunc(evs, func(a, b *eventv1.CommittedEvent) int { return cmp.Compare(a.GetSeq(), b.GetSeq()) })
	v.mu.Lock()
	for _, ev := range evs {
		v.foldEvent(ev.GetSeq(), ev.GetCommittedAt().AsTime(), ev.GetAgent(), ev.GetEvent())
		if o := v.byID[orderID(ev.GetEvent())]; o != nil && o.Seq == ev.GetSeq() {
			o.inBase = true
		}
	}
	v.mu.Unlock()
	if from > seen+1 {
		v.setSeq(from - 1)
	}
	return v.dropPruned()
}

// Merges is how often a prune overtook the view and it merged the compacted base.
func (v *View) Merges() uint64 { return v.merged.Load() }

// dropPruned drops the orders whose order event retention removed from the log and
// did not keep in the compacted base: the view holds an order as long as the ledger
// holds its order event, like a view rebuilt from the ledger, and its memory follows
// retention. The steps of an order kept are not dropped.
func (v *View) dropPruned() error {
	cut, _, err := v.src.TypesLowWater([]string{canonical.TypeOrder})
	if err != nil {
		return fmt.Errorf("orders: read the cutoff of order events: %w", err)
	}
	v.mu.RLock()
	moved := cut > v.orderCut
	v.mu.RUnlock()
	if !moved {
		return nil
	}
	// The check against the compacted base reads the ledger: outside the lock, on the
	// candidates (the fold goroutine, which is this one, is the only writer).
	var gone []*Order
	v.mu.RLock()
	for _, ids := range v.byPartner {
		for _, id := range ids {
			o := v.byID[id]
			if o.Seq >= cut {
				break
			}
			if !o.inBase {
				gone = append(gone, o)
			}
		}
	}
	v.mu.RUnlock()
	held := make([]bool, len(gone))
	for i, o := range gone {
		if held[i], err = v.src.CompactedHolds(canonical.TypeOrder, o.Event.GetKeys()); err != nil {
			return fmt.Errorf("orders: order %s: %w", o.ID, err)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	dropped := 0
	for i, o := range gone {
		if held[i] {
			o.inBase = true
			continue
		}
		dropped++
		delete(v.byID, o.ID)
		delete(v.changed, o.ID)
		if v.byERP[o.ERPOrderNumber] == o.ID {
			delete(v.byERP, o.ERPOrderNumber)
		}
	}
	if dropped > 0 {
		// One pass per partner: the dropped orders are gone from byID.
		for p, ids := range v.byPartner {
			if ids = slices.DeleteFunc(ids, func(id string) bool { return v.byID[id] == nil }); len(ids) > 0 {
				v.byPartner[p] = ids
			} else {
				delete(v.byPartner, p)
			}
		}
		v.logger.Info("order view: dropped orders whose order event retention removed", "orders", dropped, "below_seq", cut)
	}
	v.orderCut = cut
	return nil
}

// orderID is the id an order event creates an order under (keys.order, else the
// payload's order number).
func orderID(ev *eventv1.Event) string {
	if id := ev.GetKeys()["order"]; id != "" {
		return id
	}
	return ev.GetOrder().GetOrderNumber()
}

func (v *View) step() (int, error) {
	from := v.Seq() + 1
	n := 0
	v.mu.Lock()
	next, err := v.src.ScanRaw(from, v.batch, func(ev ledger.RawEvent) error {
		n++
		if !foldedType(eventType(ev.Event)) {
			return nil
		}
		var e eventv1.Event
		if err := proto.Unmarshal(ev.Event, &e); err != nil {
			v.logger.Warn("order view: skipping an event that does not decode", "seq", ev.Seq, "err", err)
			return nil
		}
		v.foldEvent(ev.Seq, ev.CommittedAt, "", &e)
		return nil
	})
	v.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("orders: read the ledger from seq %d: %w", from, err)
	}
	if next > from {
		v.setSeq(next - 1)
	}
	return n, nil
}

func foldedType(t string) bool { return slices.Contains(Types, t) }

// eventType reads the type (field 2) of an encoded Event without decoding the rest; ""
// when it has none or the bytes do not parse.
func eventType(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 2 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// find returns the order an event joins: by keys.order, else the payload's order
// number, each tried as a Crossdock id and then as an ERP number.
func (v *View) find(ev *eventv1.Event, number string) *Order {
	for _, k := range []string{ev.GetKeys()["order"], number} {
		if k == "" {
			continue
		}
		if o := v.byID[k]; o != nil {
			return o
		}
		if id, ok := v.byERP[k]; ok {
			return v.byID[id]
		}
	}
	return nil
}

// foldEvent folds one committed event; v.mu is held.
func (v *View) foldEvent(seq uint64, at time.Time, agent string, ev *eventv1.Event) {
	at = at.UTC()
	typ := ev.GetType()
	if typ == "" {
		typ = canonical.TypeOf(ev)
	}
	switch typ {
	case canonical.TypeOrder:
		ord := ev.GetOrder()
		if ord == nil {
			return
		}
		id := orderID(ev)
		if o := v.byID[id]; o != nil {
			v.addStep(o, Step{Type: typ, Status: o.Status, At: at, Seq: seq, Detail: "order sent again: " + ord.GetStatus()})
			return
		}
		if ord.GetPartner() == "" || id == "" {
			return // not a partner order
		}
		o := &Order{ID: id, Partner: ord.GetPartner(), PurchaseOrderNumber: ord.GetPurchaseOrderNumber(), Seq: seq, SubmittedAt: at, Event: ev}
		v.byID[id] = o
		// In seq order: the log comes in seq order, and mergeBase folds the base's
		// events (all above what the view folded before) by seq.
		v.byPartner[o.Partner] = append(v.byPartner[o.Partner], id)
		v.addStep(o, Step{Type: typ, Status: StatusReceived, At: at, Seq: seq, Agent: agent, Detail: fmt.Sprintf("%d lines", len(ord.GetLines()))})
	case canonical.TypeOrderAck:
		a := ev.GetOrderAck()
		o := v.find(ev, a.GetOrderNumber())
		if o == nil {
			return
		}
		if n := a.GetErpOrderNumber(); n != "" {
			o.ERPOrderNumber = n
			v.byERP[n] = o.ID
		}
		st := StatusAccepted
		if a.GetStatus() == "rejected" {
			st = StatusRejected
		}
		o.Message = a.GetMessage()
		detail := a.GetStatus()
		if a.GetErpOrderNumber() != "" {
			detail += " as " + a.GetErpOrderNumber()
		}
		if a.GetMessage() != "" {
			detail += ": " + a.GetMessage()
		}
		v.addStep(o, Step{Type: typ, Status: st, At: at, Seq: seq, Detail: detail})
	case canonical.TypeShipment:
		s := ev.GetShipment()
		o := v.find(ev, s.GetOrderNumber())
		if o == nil {
			return
		}
		if o.shipped == nil {
			o.shipped = map[string]map[string]*big.Rat{}
		}
		lines := map[string]*big.Rat{}
		for _, l := range s.GetLines() {
			k := l.GetOrderLineNumber()
			if k == "" {
				k = "sku:" + l.GetSku()
			}
			q, ok := new(big.Rat).SetString(l.GetQuantity())
			if !ok {
				continue
			}
			if p := lines[k]; p != nil {
				q.Add(q, p)
			}
			lines[k] = q
		}
		o.shipped[s.GetShipmentNumber()] = lines
		detail := "shipment " + s.GetShipmentNumber()
		if s.GetTrackingNumber() != "" {
			detail += ", tracking " + s.GetTrackingNumber()
		}
		v.addStep(o, Step{Type: typ, Status: shippedStatus(o), At: at, Seq: seq, Detail: detail})
	case canonical.TypeInvoice:
		inv := ev.GetInvoice()
		o := v.find(ev, inv.GetOrderNumber())
		if o == nil {
			return
		}
		v.addStep(o, Step{Type: typ, Status: StatusInvoiced, At: at, Seq: seq, Detail: "invoice " + inv.GetInvoiceNumber() + " total " + inv.GetTotal() + " " + inv.GetCurrency()})
	case canonical.TypeOrderCancel:
		c := ev.GetOrderCancel()
		o := v.find(ev, c.GetOrderNumber())
		if o == nil {
			return
		}
		st := StatusCancelRequested
		if c.GetStatus() == "cancelled" {
			st = StatusCancelled
		}
		o.Message = c.GetReason()
		v.addStep(o, Step{Type: typ, Status: st, At: at, Seq: seq, Detail: c.GetStatus() + ": " + c.GetReason()})
	case canonical.TypeSalesReturn:
		r := ev.GetSalesReturn()
		o := v.find(ev, r.GetOrderNumber())
		if o == nil {
			return
		}
		v.addStep(o, Step{Type: typ, Status: StatusReturnRequested, At: at, Seq: seq, Detail: "return " + r.GetReturnNumber() + ": " + r.GetReason()})
	case canonical.TypeOrderStatus:
		s := ev.GetOrderStatus()
		o := v.byID[s.GetOrderNumber()]
		if o == nil {
			return
		}
		o.Notices = append(o.Notices, Step{Type: typ, Status: s.GetStatus(), At: at, Seq: seq, Detail: fmt.Sprintf("told %s (cause seq %d)", s.GetStatus(), s.GetCauseSeq())})
		if s.GetCauseSeq() >= o.NotifiedSeq {
			o.Notified, o.NotifiedSeq = s.GetStatus(), s.GetCauseSeq()
		}
		if o.Notified == o.Status && o.NotifiedSeq >= o.statusSeq() {
			delete(v.changed, o.ID)
		}
	}
}

// previousStatus is the status before the step that set the current one ("" for a
// new order).
func (o *Order) previousStatus() string {
	for i := len(o.Steps) - 1; i > 0; i-- {
		if o.Steps[i-1].Status != o.Steps[i].Status {
			return o.Steps[i-1].Status
		}
	}
	return ""
}

// statusSeq is the seq of the step that set the current status.
func (o *Order) statusSeq() uint64 {
	for i := len(o.Steps) - 1; i >= 0; i-- {
		if i == 0 || o.Steps[i-1].Status != o.Steps[i].Status {
			return o.Steps[i].Seq
		}
	}
	return 0
}

func (v *View) addStep(o *Order, s Step) {
	if s.Status != o.Status {
		v.changed[o.ID] = true
	}
	o.Status = s.Status
	o.Steps = append(o.Steps, s)
	o.LastSeq, o.UpdatedAt = s.Seq, s.At
}

// shippedStatus compares the shipped quantities with the ordered ones.
func shippedStatus(o *Order) string {
	total := map[string]*big.Rat{}
	for _, lines := range o.shipped {
		for k, q := range lines {
			if total[k] == nil {
				total[k] = new(big.Rat)
			}
			total[k].Add(total[k], q)
		}
	}
	for i, l := range o.Event.GetOrder().GetLines() {
		want, ok := new(big.Rat).SetString(l.GetQuantity())
		if !ok {
			continue
		}
		got := total[lineKey(l, i)]
		if got == nil {
			got = total["sku:"+l.GetSku()]
		}
		if got == nil || got.Cmp(want) < 0 {
			return StatusPartiallyShipped
		}
	}
	return StatusShipped
}

// lineKey is the line number of an order line (its 1-based position when it has none).
func lineKey(l *eventv1.OrderLine, i int) string {
	if l.GetLineNumber() != "" {
		return l.GetLineNumber()
	}
	return strconv.Itoa(i + 1)
}

// Len is how many orders the view holds.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.byID)
}

// Get returns a copy of the order with id, or nil.
func (v *View) Get(id string) *Order {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if o := v.byID[id]; o != nil {
		return o.clone()
	}
	return nil
}

// ByERPNumber returns a copy of the order the ERP numbered n, or nil.
func (v *View) ByERPNumber(n string) *Order {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if o := v.byID[v.byERP[n]]; o != nil {
		return o.clone()
	}
	return nil
}

// Filter selects orders for List.
type Filter struct {
	Partner string // "" for every partner (admin only)
	Status  string
	// Since and Until bound SubmittedAt (zero: open); Since inclusive, Until exclusive.
	Since, Until time.Time
	// Before is a page token: only orders with a seq below it (0: from the newest).
	Before uint64
	Limit  int
}

// List returns orders matching f, newest first, and the page token of the next page
// (0 at the end).
func (v *View) List(f Filter) ([]*Order, uint64) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	var ids []string
	if f.Partner != "" {
		ids = v.byPartner[f.Partner]
	} else {
		for _, l := range v.byPartner {
			ids = append(ids, l...)
		}
		sort.Slice(ids, func(i, j int) bool { return v.byID[ids[i]].Seq < v.byID[ids[j]].Seq })
	}
	var out []*Order
	for i := len(ids) - 1; i >= 0; i-- {
		o := v.byID[ids[i]]
		if f.Before > 0 && o.Seq >= f.Before {
			continue
		}
		if f.Status != "" && o.Status != f.Status {
			continue
		}
		if !f.Since.IsZero() && o.SubmittedAt.Before(f.Since) || !f.Until.IsZero() && !o.SubmittedAt.Before(f.Until) {
			continue
		}
		if len(out) == f.Limit {
			return out, out[len(out)-1].Seq
		}
		out = append(out, o.clone())
	}
	return out, 0
}

// Unnotified returns up to max orders whose status the partner was not yet told of (no
// order.status event names it), oldest change first.
func (v *View) Unnotified(max int) []*Order {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []*Order
	for id := range v.changed {
		o := v.byID[id]
		if o == nil || o.Notified == o.Status && o.NotifiedSeq >= o.statusSeq() {
			continue
		}
		out = append(out, o.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeq < out[j].LastSeq })
	if len(out) > max {
		out = out[:max]
	}
	return out
}
