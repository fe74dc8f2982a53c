package tryton

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// source polls Tryton. What it already emitted is remembered in memory so an unchanged
// level or status is not sent again. The memory lasts one Read call: a new call starts
// from a committed position that may be older than what was emitted, so it forgets and
// re-emits the lookback window with the same per-event positions (hence the same event
// ids), which the control plane drops as duplicates.
type source struct {
	c *Connector

	mu     sync.Mutex
	locs   []location
	levels map[levelKey]string // last emitted "on_hand/available"
	moves  map[int64]time.Time // stock moves already looked at → their modification time
	sales  map[int64]string    // last emitted state per sale
	salesT map[int64]time.Time // modification time of that state
	ships  map[int64]time.Time // customer shipments emitted as done → their modification time
	noCode map[int64]bool      // products without a code, logged once
}

type location struct {
	ID    int64
	Label string
}

type locRow struct {
	ID   int64   `json:"id"`
	Code tstring `json:"code"`
	Name tstring `json:"name"`
}

type levelKey struct{ product, location int64 }

func newSource(c *Connector) *source {
	s := &source{c: c, noCode: map[int64]bool{}}
	s.forget()
	return s
}

func (s *source) forget() {
	s.levels, s.moves = map[levelKey]string{}, map[int64]time.Time{}
	s.sales, s.salesT = map[int64]string{}, map[int64]time.Time{}
	s.ships = map[int64]time.Time{}
}

// Read polls Tryton every poll_interval from the position on.
func (c *Connector) Read(ctx context.Context, from string, emit sdk.Emit) error {
	cur, err := parsePosition(from)
	if err != nil {
		return sdk.Permanent(err)
	}
	if c.src == nil {
		return fmt.Errorf("tryton: not configured")
	}
	s := c.src
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget()
	if *c.cfg.Inventory && s.locs == nil {
		if s.locs, err = s.resolveLocations(ctx); err != nil {
			return err
		}
		c.logger.Info("tryton source reading inventory", "locations", locationsString(s.locs))
	}
	tick := time.NewTicker(c.cfg.pollInterval)
	defer tick.Stop()
	for {
		if err := s.poll(ctx, &cur, emit); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Ack needs no work: Tryton has nothing to confirm.
func (c *Connector) Ack(context.Context, string) error { return nil }

// resolveLocations turns the configured location codes or names into ids; no setting
// means every warehouse.
func (s *source) resolveLocations(ctx context.Context) ([]location, error) {
	var rows []locRow
	want := s.c.cfg.Locations
	domain := []any{}
	if len(want) == 0 {
		domain = append(domain, []any{"type", "=", "warehouse"})
	} else {
		domain = append(domain, "OR", []any{"code", "in", want}, []any{"name", "in", want})
	}
	if err := s.c.rpc.into(ctx, &rows, "stock.location", "search_read", nil, domain, 0, nil, [][]string{{"id", "ASC"}}, []string{"code", "name"}); err != nil {
		return nil, fmt.Errorf("look up stock locations: %w", err)
	}
	var out []location
	for _, w := range want {
		i := slices.IndexFunc(rows, func(r locRow) bool { return string(r.Code) == w })
		if i < 0 {
			i = slices.IndexFunc(rows, func(r locRow) bool { return string(r.Name) == w })
		}
		if i < 0 {
			return nil, sdk.Permanent(fmt.Errorf("locations: Tryton has no stock location with code or name %q", w))
		}
		out = append(out, location{ID: rows[i].ID, Label: w})
	}
	if len(want) == 0 {
		for _, r := range rows {
			l := string(r.Code)
			if l == "" {
				l = string(r.Name)
			}
			out = append(out, location{ID: r.ID, Label: l})
		}
		if len(out) == 0 {
			return nil, sdk.Permanent(fmt.Errorf("locations: Tryton has no warehouse; configure locations"))
		}
	}
	return out, nil
}

// pending is what one poll found: events and the memory to update once they are
// durable.
type pending struct {
	events    []*eventv1.Event
	positions []string
	levels    map[levelKey]string
	moves     map[int64]time.Time
	sales     map[int64]string
	salesT    map[int64]time.Time
	ships     map[int64]time.Time
}

func (s *source) poll(ctx context.Context, cur *position, emit sdk.Emit) error {
	next := *cur
	p := &pending{levels: map[levelKey]string{}, moves: map[int64]time.Time{},
		sales: map[int64]string{}, salesT: map[int64]time.Time{}, ships: map[int64]time.Time{}}
	if *s.c.cfg.Inventory {
		t, err := s.pollInventory(ctx, cur.Inventory, p)
		if err != nil {
			return err
		}
		next.Inventory = t
	}
	if *s.c.cfg.Orders {
		t, err := s.pollSales(ctx, cur.Sales, p)
		if err != nil {
			return err
		}
		next.Sales = t
	}
	if *s.c.cfg.Shipments {
		t, err := s.pollShipments(ctx, cur.Shipments, p)
		if err != nil {
			return err
		}
		next.Shipments = t
	}
	// Batches before the last carry the old position: a crash between them resumes
	// from before the poll and emits the same events (same positions, same ids) again.
	size := s.c.cfg.PageSize
	for start := 0; start < len(p.events); start += size {
		end := min(start+size, len(p.events))
		pos := cur.String()
		if end == len(p.events) {
			pos = next.String()
		}
		b := sdk.Batch{Events: p.events[start:end], Position: pos, EventPositions: p.positions[start:end]}
		if err := emit(ctx, b); err != nil {
			return fmt.Errorf("emit: %w", err)
		}
	}
	for k, v := range p.levels {
		s.levels[k] = v
	}
	for k, v := range p.sales {
		s.sales[k], s.salesT[k] = v, p.salesT[k]
	}
	for k, v := range p.moves {
		s.moves[k] = v
	}
	for k, v := range p.ships {
		s.ships[k] = v
	}
	s.prune(next)
	*cur = next
	return nil
}

// prune forgets moves and sales that fell out of the lookback window: they are not
// queried again.
func (s *source) prune(p position) {
	lb := s.c.cfg.lookback
	for id, t := range s.moves {
		if t.Before(p.Inventory.Add(-lb)) {
			delete(s.moves, id)
		}
	}
	for id, t := range s.salesT {
		if t.Before(p.Sales.Add(-lb)) {
			delete(s.sales, id)
			delete(s.salesT, id)
		}
	}
	for id, t := range s.ships {
		if t.Before(p.Shipments.Add(-lb)) {
			delete(s.ships, id)
		}
	}
}

// stamps are a record's id and times; modified is write_date, or create_date when it was
// never written.
type stamps struct {
	ID         int64     `json:"id"`
	WriteDate  tdatetime `json:"write_date"`
	CreateDate tdatetime `json:"create_date"`
}

func (r stamps) modified() time.Time {
	if !r.WriteDate.IsZero() {
		return r.WriteDate.Time
	}
	return r.CreateDate.Time
}

// searchModified pages through model's records modified at or after since (all when
// since is zero), in id order, decoding each page with decode.
func (s *source) searchModified(ctx context.Context, model string, since time.Time, fields []string, decode func(json.RawMessage) ([]int64, error)) error {
	var last int64
	for {
		domain := []any{[]any{"id", ">", last}}
		if !since.IsZero() {
			domain = append(domain, []any{"OR", []any{"write_date", ">=", datetimeArg(since)}, []any{"create_date", ">=", datetimeArg(since)}})
		}
		res, err := s.c.rpc.model(ctx, model, "search_read", nil, domain, 0, s.c.cfg.PageSize, [][]string{{"id", "ASC"}}, fields)
		if err != nil {
			return fmt.Errorf("poll %s: %w", model, err)
		}
		ids, err := decode(res)
		if err != nil {
			return fmt.Errorf("poll %s: %w: %v", model, ErrProtocol, err)
		}
		if len(ids) == 0 {
			return nil
		}
		last = slices.Max(ids)
		if len(ids) < s.c.cfg.PageSize {
			return nil
		}
	}
}

func (s *source) since(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(-s.c.cfg.lookback)
}

type moveRow struct {
	stamps
	Product ref `json:"product"`
}

// moveChange is the newest stock move of a product: the modification time and id that
// identify the state its quantities were read in.
type moveChange struct {
	move int64
	at   time.Time
}

func (m moveChange) after(o moveChange) bool {
	return m.at.After(o.at) || (m.at.Equal(o.at) && m.move > o.move)
}

// scanMoves reads the stock moves modified since from and returns, per product, its
// newest move, the products with a move not looked at before (with those moves), and
// the newest modification time.
func (s *source) scanMoves(ctx context.Context, from, latest time.Time) (newest map[int64]moveChange, unseen map[int64]map[int64]time.Time, _ time.Time, _ error) {
	newest, unseen = map[int64]moveChange{}, map[int64]map[int64]time.Time{}
	err := s.searchModified(ctx, "stock.move", from, []string{"product", "write_date", "create_date"}, func(res json.RawMessage) ([]int64, error) {
		var rows []moveRow
		if err := json.Unmarshal(res, &rows); err != nil {
			return nil, err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			m := r.modified()
			if m.After(latest) {
				latest = m
			}
			prod := int64(r.Product)
			if ch := (moveChange{r.ID, m}); ch.after(newest[prod]) {
				newest[prod] = ch
			}
			if seen, ok := s.moves[r.ID]; ok && seen.Equal(m) {
				continue
			}
			if unseen[prod] == nil {
				unseen[prod] = map[int64]time.Time{}
			}
			unseen[prod][r.ID] = m
		}
		return ids, nil
	})
	return newest, unseen, latest, err
}

// pollInventory finds the products whose stock moves changed since the position and
// reads their quantities at each configured location. The moves are read again after
// the quantities: a product whose newest move changed in between is left for the next
// poll, so every level is tied to the move state it was read in and a restart that
// re-reads it gives it the same position.
func (s *source) pollInventory(ctx context.Context, since time.Time, p *pending) (time.Time, error) {
	from := s.since(since)
	newest, unseen, latest, err := s.scanMoves(ctx, from, since)
	if err != nil || len(unseen) == 0 {
		return latest, err
	}
	products := make([]int64, 0, len(unseen))
	for id := range unseen {
		products = append(products, id)
	}
	slices.Sort(products)
	type reading struct {
		loc                          location
		code, uom                    string
		onHand, available, allocated string
	}
	readings := map[int64][]reading{}
	for _, loc := range s.locs {
		for start := 0; start < len(products); start += s.c.cfg.PageSize {
			ids := products[start:min(start+s.c.cfg.PageSize, len(products))]
			rows, err := s.quantities(ctx, loc, ids, false)
			if err != nil {
				return since, err
			}
			avail, err := s.quantities(ctx, loc, ids, true)
			if err != nil {
				return since, err
			}
			for i, r := range rows {
				rd := reading{loc: loc, code: string(r.Code), onHand: zero(r.Quantity)}
				if i < len(avail) && avail[i].ID == r.ID {
					rd.available = zero(avail[i].Quantity)
					rd.allocated = subtract(rd.onHand, rd.available)
				}
				if r.UoM != nil {
					rd.uom = string(r.UoM.Symbol)
				}
				readings[r.ID] = append(readings[r.ID], rd)
			}
		}
	}
	again, _, _, err := s.scanMoves(ctx, from, since)
	if err != nil {
		return since, err
	}
	for _, prod := range products {
		ch := newest[prod]
		if again[prod] != ch {
			continue // moved while we read; the next poll reads it again
		}
		for id, m := range unseen[prod] {
			p.moves[id] = m
		}
		for _, rd := range readings[prod] {
			if rd.code == "" {
				if !s.noCode[prod] {
					s.noCode[prod] = true
					s.c.logger.Warn("tryton product has no code; its inventory is not reported", "product_id", prod)
				}
				continue
			}
			k := levelKey{prod, rd.loc.ID}
			q := rd.onHand + "/" + rd.available
			if last, ok := s.levels[k]; ok && last == q {
				continue
			}
			lvl := &eventv1.InventoryLevel{Sku: rd.code, Location: rd.loc.Label, OnHand: rd.onHand,
				Available: rd.available, Allocated: rd.allocated, UnitOfMeasure: rd.uom}
			p.events = append(p.events, &eventv1.Event{Type: "inventory.level",
				Keys:       map[string]string{"sku": lvl.Sku, "location": lvl.Location},
				OccurredAt: timestamppb.New(ch.at), Payload: &eventv1.Event_InventoryLevel{InventoryLevel: lvl}})
			p.positions = append(p.positions, fmt.Sprintf("v1;inv;p=%d;l=%d;m=%d@%d;q=%s", prod, rd.loc.ID, ch.move, ch.at.UnixMicro(), q))
			p.levels[k] = q
		}
	}
	return latest, nil
}

type quantityRow struct {
	ID       int64   `json:"id"`
	Code     tstring `json:"code"`
	Quantity tnumber `json:"quantity"`
	UoM      *struct {
		Symbol tstring `json:"symbol"`
	} `json:"default_uom."`
}

// quantities reads products' quantities at loc and its children: done moves only
// (on hand), or with assigned outgoing moves taken off (available).
func (s *source) quantities(ctx context.Context, loc location, ids []int64, assigned bool) ([]quantityRow, error) {
	var rows []quantityRow
	qctx := map[string]any{"locations": []int64{loc.ID}, "with_childs": true}
	if assigned {
		qctx["stock_assign"] = true
	}
	if err := s.c.rpc.into(ctx, &rows, "product.product", "read", qctx, ids, []string{"code", "quantity", "default_uom.symbol"}); err != nil {
		return nil, fmt.Errorf("read quantities at %s: %w", loc.Label, err)
	}
	return rows, nil
}

func zero(n tnumber) string {
	if n == "" {
		return "0"
	}
	return string(n)
}

// subtract is a-b for decimal strings, exactly.
func subtract(a, b string) string {
	x, ok1 := new(big.Rat).SetString(a)
	y, ok2 := new(big.Rat).SetString(b)
	if !ok1 || !ok2 {
		return ""
	}
	out := x.Sub(x, y).FloatString(12)
	out = strings.TrimRight(out, "0")
	out = strings.TrimSuffix(out, ".")
	if out == "-0" {
		out = "0"
	}
	return out
}

type saleRow struct {
	stamps
	Number      tstring `json:"number"`
	State       tstring `json:"state"`
	Reference   tstring `json:"reference"`
	Description tstring `json:"description"`
	Party       *struct {
		Code tstring `json:"code"`
		Name tstring `json:"name"`
	} `json:"party."`
	Currency *struct {
		Code tstring `json:"code"`
	} `json:"currency."`
	Total tnumber `json:"total_amount"`
	Lines []struct {
		Type     tstring `json:"type"`
		Quantity tnumber `json:"quantity"`
		Price    tnumber `json:"unit_price"`
		Product  *struct {
			Code tstring `json:"code"`
		} `json:"product."`
	} `json:"lines."`
}

var saleFields = []string{"number", "state", "reference", "description", "write_date", "create_date", "party.code", "party.name",
	"currency.code", "total_amount", "lines.type", "lines.quantity", "lines.unit_price", "lines.product.code"}

// pollSales emits an order event for every numbered sale whose state changed.
func (s *source) pollSales(ctx context.Context, since time.Time, p *pending) (time.Time, error) {
	latest := since
	err := s.searchModified(ctx, "sale.sale", s.since(since), saleFields, func(res json.RawMessage) ([]int64, error) {
		var rows []saleRow
		if err := json.Unmarshal(res, &rows); err != nil {
			return nil, err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			m := r.modified()
			if m.After(latest) {
				latest = m
			}
			// A draft that was never quoted has no number to key it by.
			if r.Number == "" || s.sales[r.ID] == string(r.State) {
				continue
			}
			p.events = append(p.events, saleEvent(r, m))
			p.positions = append(p.positions, fmt.Sprintf("v1;sale;s=%d;%s@%d", r.ID, r.State, m.UnixMicro()))
			p.sales[r.ID], p.salesT[r.ID] = string(r.State), m
		}
		return ids, nil
	})
	return latest, err
}

func saleEvent(r saleRow, at time.Time) *eventv1.Event {
	o := &eventv1.Order{OrderNumber: string(r.Number), Status: string(r.State), Total: string(r.Total)}
	if r.Party != nil {
		o.Customer = string(r.Party.Code)
		if o.Customer == "" {
			o.Customer = string(r.Party.Name)
		}
	}
	if r.Currency != nil {
		o.Currency = string(r.Currency.Code)
	}
	n := 0
	for _, l := range r.Lines {
		if l.Type != "line" || l.Product == nil || l.Product.Code == "" {
			continue
		}
		n++
		o.Lines = append(o.Lines, &eventv1.OrderLine{LineNumber: fmt.Sprint(n), Sku: string(l.Product.Code),
			Quantity: string(l.Quantity), UnitPrice: string(l.Price)})
	}
	return &eventv1.Event{Type: "order", Keys: orderKeys(string(r.Number), string(r.Reference), string(r.Description)),
		OccurredAt: timestamppb.New(at), Payload: &eventv1.Event_Order{Order: o}}
}

// crossdockOrder is the Crossdock order id of a sale the sink created (its description
// carries tagPrefix and its reference the order id), "" for other sales.
func crossdockOrder(reference, description string) string {
	if !strings.HasPrefix(description, tagPrefix) {
		return ""
	}
	return reference
}

// orderKeys are the business keys of an event about sale number: order is the Crossdock
// order id when the sink created the sale (so the order's view joins the event), else
// the sale's number; erp_order is always the sale's number.
func orderKeys(number, reference, description string) map[string]string {
	k := map[string]string{"order": number, "erp_order": number}
	if id := crossdockOrder(reference, description); id != "" {
		k["order"] = id
	}
	return k
}

// locationsString is for logs.
func locationsString(ls []location) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(l.Label)
	}
	return b.String()
}

type shipmentRow struct {
	stamps
	Number    tstring   `json:"number"`
	State     tstring   `json:"state"`
	Effective tdatetime `json:"effective_date"`
	Reference tstring   `json:"reference"`
	Moves     []struct {
		Quantity tnumber `json:"quantity"`
		Product  *struct {
			Code tstring `json:"code"`
		} `json:"product."`
		UoM *struct {
			Symbol tstring `json:"symbol"`
		} `json:"uom."`
	} `json:"outgoing_moves."`
}

var shipmentFields = []string{"number", "state", "effective_date", "reference", "write_date", "create_date",
	"outgoing_moves.quantity", "outgoing_moves.product.code", "outgoing_moves.uom.symbol"}

type shipSaleRow struct {
	ID          int64   `json:"id"`
	Number      tstring `json:"number"`
	Reference   tstring `json:"reference"`
	Description tstring `json:"description"`
	Shipments   []int64 `json:"shipments"`
}

// pollShipments emits a shipment event for every customer shipment (stock.shipment.out)
// done since the position, keyed by the order of the sale it ships (orderKeys), so a
// shipment of a sale the sink created joins the Crossdock order.
func (s *source) pollShipments(ctx context.Context, since time.Time, p *pending) (time.Time, error) {
	latest := since
	var done []shipmentRow
	err := s.searchModified(ctx, "stock.shipment.out", s.since(since), shipmentFields, func(res json.RawMessage) ([]int64, error) {
		var rows []shipmentRow
		if err := json.Unmarshal(res, &rows); err != nil {
			return nil, err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			if m := r.modified(); m.After(latest) {
				latest = m
			}
			if _, emitted := s.ships[r.ID]; r.State == "done" && !emitted {
				done = append(done, r)
			}
		}
		return ids, nil
	})
	if err != nil || len(done) == 0 {
		return latest, err
	}
	ids := make([]int64, len(done))
	for i, r := range done {
		ids[i] = r.ID
	}
	var sales []shipSaleRow
	if err := s.c.rpc.into(ctx, &sales, "sale.sale", "search_read", nil, []any{[]any{"shipments", "in", ids}}, 0, nil,
		[][]string{{"id", "ASC"}}, []string{"number", "reference", "description", "shipments"}); err != nil {
		return since, fmt.Errorf("poll stock.shipment.out: find the sales shipped: %w", err)
	}
	saleOf := map[int64]shipSaleRow{}
	for _, sl := range sales {
		for _, id := range sl.Shipments {
			if _, ok := saleOf[id]; !ok {
				saleOf[id] = sl
			}
		}
	}
	for _, r := range done {
		m := r.modified()
		p.events = append(p.events, shipmentEvent(r, saleOf[r.ID], m))
		p.positions = append(p.positions, fmt.Sprintf("v1;shipment.out=%d;done@%d", r.ID, m.UnixMicro()))
		p.ships[r.ID] = m
	}
	return latest, nil
}

func shipmentEvent(r shipmentRow, sale shipSaleRow, at time.Time) *eventv1.Event {
	sh := &eventv1.Shipment{ShipmentNumber: string(r.Number), Status: "shipped", TrackingNumber: string(r.Reference)}
	if !r.Effective.IsZero() {
		sh.ShippedAt = timestamppb.New(r.Effective.Time)
	} else {
		sh.ShippedAt = timestamppb.New(at)
	}
	keys := map[string]string{"shipment": sh.ShipmentNumber}
	if sale.Number != "" {
		sh.OrderNumber = string(sale.Number)
		for k, v := range orderKeys(string(sale.Number), string(sale.Reference), string(sale.Description)) {
			keys[k] = v
		}
		if id := crossdockOrder(string(sale.Reference), string(sale.Description)); id != "" {
			sh.OrderNumber = id
		}
	}
	for _, mv := range r.Moves {
		if mv.Product == nil || mv.Product.Code == "" {
			continue
		}
		l := &eventv1.ShipmentLine{Sku: string(mv.Product.Code), Quantity: string(mv.Quantity)}
		if mv.UoM != nil {
			l.UnitOfMeasure = string(mv.UoM.Symbol)
		}
		sh.Lines = append(sh.Lines, l)
	}
	return &eventv1.Event{Type: "shipment", Keys: keys, OccurredAt: timestamppb.New(at),
		Payload: &eventv1.Event_Shipment{Shipment: sh}}
}
