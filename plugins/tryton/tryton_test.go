package tryton_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
	"github.com/crossdock/crossdock/plugins/tryton"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// erp wraps a real trytond with the records the tests need, created through Tryton's
// own JSON-RPC (testsvc's client, not the connector's).
type erp struct {
	*testsvc.Tryton
	unit                                   int64
	warehouse, storage, supplier, customer int64
	lost                                   int64
}

func newERP(t *testing.T) *erp {
	tr := testsvc.StartTryton(t)
	e := &erp{Tryton: tr}
	var uoms []int64
	tr.Into(t, &uoms, "product.uom", "search", []any{[]any{"symbol", "=", "u"}}, 0, 1, nil)
	e.unit = uoms[0]
	var locs []struct {
		ID   int64  `json:"id"`
		Code string `json:"code"`
	}
	tr.Into(t, &locs, "stock.location", "search_read", []any{[]any{"code", "in", []string{"WH", "STO", "SUP", "CUS"}}}, 0, nil, nil, []string{"code"})
	for _, l := range locs {
		switch l.Code {
		case "WH":
			e.warehouse = l.ID
		case "STO":
			e.storage = l.ID
		case "SUP":
			e.supplier = l.ID
		case "CUS":
			e.customer = l.ID
		}
	}
	var lost []int64
	tr.Into(t, &lost, "stock.location", "search", []any{[]any{"type", "=", "lost_found"}}, 0, 1, nil)
	if e.warehouse == 0 || e.storage == 0 || e.supplier == 0 || e.customer == 0 || len(lost) != 1 {
		t.Fatalf("stock module's locations missing: %+v, lost and found %v", locs, lost)
	}
	e.lost = lost[0]
	return e
}

func dec(s string) map[string]any { return map[string]any{"__class__": "Decimal", "decimal": s} }

// product creates a salable goods product with code sku.
func (e *erp) product(t *testing.T, sku string) int64 {
	t.Helper()
	e.Model(t, "product.template", "create", []any{map[string]any{
		"name": "Product " + sku, "type": "goods", "default_uom": e.unit, "salable": true, "sale_uom": e.unit,
		"list_price": dec("12.50"), "products": []any{[]any{"create", []any{map[string]any{"suffix_code": sku}}}},
	}})
	var ids []int64
	e.Into(t, &ids, "product.product", "search", []any{[]any{"code", "=", sku}}, 0, nil, nil)
	if len(ids) != 1 {
		t.Fatalf("product %s: %v", sku, ids)
	}
	return ids[0]
}

// party creates a customer with an address.
func (e *erp) party(t *testing.T, code string) int64 {
	t.Helper()
	var ids []int64
	e.Into(t, &ids, "party.party", "create", []any{map[string]any{"name": "Customer " + code, "code": code,
		"addresses": []any{[]any{"create", []any{map[string]any{"street": "1 Dock Road", "city": "Rotterdam"}}}}}})
	return ids[0]
}

// move creates a stock move and does it, as a warehouse clerk receiving goods would.
func (e *erp) move(t *testing.T, product, from, to int64, qty float64) {
	t.Helper()
	var ids []int64
	e.Into(t, &ids, "stock.move", "create", []any{map[string]any{"product": product, "uom": e.unit, "quantity": qty,
		"from_location": from, "to_location": to, "unit_price": dec("4.00"), "currency": e.Currency, "company": e.Company}})
	e.Model(t, "stock.move", "do", ids)
}

func (e *erp) settings(extra string) []byte {
	return []byte(fmt.Sprintf(`{"url":%q,"database":%q,"user":%q,"password":%q,"locations":["WH"],"poll_interval":"50ms","lookback":"2s"%s}`,
		e.URL, e.Database, e.User, e.Password, extra))
}

func (e *erp) connector(t *testing.T, extra string) *tryton.Connector {
	t.Helper()
	c := tryton.New(controlplanetest.Logger(t))
	if err := c.Configure(context.Background(), e.settings(extra)); err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err != nil {
		t.Fatalf("health: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// reader runs Read in the background and records what it emits.
type reader struct {
	mu      sync.Mutex
	batches []sdk.Batch
	err     error
	stop    func()
}

func read(t *testing.T, c *tryton.Connector, from string) *reader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &reader{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := c.Read(ctx, from, func(_ context.Context, b sdk.Batch) error {
			if len(b.EventPositions) != len(b.Events) {
				t.Errorf("batch has %d events and %d event positions", len(b.Events), len(b.EventPositions))
			}
			r.mu.Lock()
			r.batches = append(r.batches, b)
			r.mu.Unlock()
			return nil
		})
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	return r
}

type seen struct {
	ev  *eventv1.Event
	pos string // the event's own position
}

func (r *reader) events() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []seen
	for _, b := range r.batches {
		for i, ev := range b.Events {
			out = append(out, seen{ev, b.EventPositions[i]})
		}
	}
	return out
}

func (r *reader) lastPosition() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.batches[len(r.batches)-1].Position
}

func (r *reader) readErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// level finds the newest inventory level for sku at location.
func (r *reader) level(sku, location string) (string, bool) {
	var v string
	var ok bool
	for _, s := range r.events() {
		if l := s.ev.GetInventoryLevel(); l != nil && l.Sku == sku && l.Location == location {
			v, ok = l.OnHand, true
		}
	}
	return v, ok
}

func waitLevel(t *testing.T, r *reader, sku, want string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("inventory level %s@WH = %s", sku, want), func() bool {
		if err := r.readErr(); err != nil {
			t.Fatalf("Read: %v", err)
		}
		got, _ := r.level(sku, "WH")
		return got == want
	})
}

func TestAgainstTryton(t *testing.T) {
	e := newERP(t)

	t.Run("StockMoveBecomesInventoryLevel", func(t *testing.T) {
		p := e.product(t, "INV-1")
		c := e.connector(t, `,"orders":false`)
		r := read(t, c, "")
		e.move(t, p, e.supplier, e.storage, 7)
		waitLevel(t, r, "INV-1", "7")
		e.move(t, p, e.supplier, e.storage, 3)
		waitLevel(t, r, "INV-1", "10")
		// Out to lost and found: a move to a customer would need an origin (a shipment).
		e.move(t, p, e.storage, e.lost, 4)
		waitLevel(t, r, "INV-1", "6")
		for _, s := range r.events() {
			if s.ev.GetType() != "inventory.level" || s.ev.Keys["sku"] == "" || s.ev.Keys["location"] != "WH" || s.ev.OccurredAt == nil {
				t.Fatalf("malformed event %v", s.ev)
			}
			if s.ev.GetInventoryLevel().UnitOfMeasure != "u" {
				t.Fatalf("unit of measure %q, want u", s.ev.GetInventoryLevel().UnitOfMeasure)
			}
		}
		// Goods reserved for an outgoing move (assigned, not yet done) stay on hand but
		// are no longer available.
		var out []int64
		e.Into(t, &out, "stock.move", "create", []any{map[string]any{"product": p, "uom": e.unit, "quantity": 2.0,
			"from_location": e.storage, "to_location": e.lost, "company": e.Company}})
		e.Model(t, "stock.move", "assign", out)
		testutil.WaitFor(t, 30*time.Second, "INV-1 with 2 allocated", func() bool {
			for _, s := range r.events() {
				if l := s.ev.GetInventoryLevel(); l.GetSku() == "INV-1" && l.OnHand == "6" && l.Available == "4" && l.Allocated == "2" {
					return true
				}
			}
			return false
		})

		// Each level once: an unchanged quantity is not sent again while running. The
		// draft move, before it is done, may show the product at 0 first.
		var levels []string
		for _, s := range r.events() {
			if l := s.ev.GetInventoryLevel(); l.GetSku() == "INV-1" {
				levels = append(levels, l.OnHand+"/"+l.Available+"/"+l.Allocated)
			}
		}
		if len(levels) > 0 && levels[0] == "0/0/0" {
			levels = levels[1:]
		}
		if got := strings.Join(levels, " "); got != "7/7/0 10/10/0 6/6/0 6/4/2" {
			t.Fatalf("levels for INV-1 (on hand/available/allocated): %s, want 7/7/0 10/10/0 6/6/0 6/4/2", got)
		}
	})

	t.Run("SaleStatusChangeBecomesOrderEvent", func(t *testing.T) {
		p := e.product(t, "ORD-1")
		party := e.party(t, "C-ORD")
		var addr []struct {
			Addresses []int64 `json:"addresses"`
		}
		e.Into(t, &addr, "party.party", "read", []int64{party}, []string{"addresses"})
		c := e.connector(t, `,"inventory":false`)
		r := read(t, c, "")
		var sale []int64
		e.Into(t, &sale, "sale.sale", "create", []any{map[string]any{"party": party, "invoice_address": addr[0].Addresses[0],
			"shipment_address": addr[0].Addresses[0], "invoice_method": "manual",
			"lines": []any{[]any{"create", []any{map[string]any{"product": p, "quantity": 2.0, "unit": e.unit, "unit_price": dec("12.50"), "description": "x"}}}}}})
		e.Model(t, "sale.sale", "quote", sale)
		var rows []struct {
			Number string `json:"number"`
		}
		e.Into(t, &rows, "sale.sale", "read", sale, []string{"number"})
		number := rows[0].Number
		status := func(want string) *eventv1.Order {
			var got *eventv1.Order
			testutil.WaitFor(t, 30*time.Second, "order "+number+" status "+want, func() bool {
				for _, s := range r.events() {
					if o := s.ev.GetOrder(); o != nil && o.OrderNumber == number && o.Status == want {
						got = o
						return true
					}
				}
				return false
			})
			return got
		}
		o := status("quotation")
		if o.Customer != "C-ORD" || o.Currency != "EUR" || o.Total != "25" && o.Total != "25.00" || len(o.Lines) != 1 ||
			o.Lines[0].Sku != "ORD-1" || o.Lines[0].Quantity != "2" || o.Lines[0].UnitPrice != "12.50" {
			t.Fatalf("order event %v", o)
		}
		// Confirming runs Tryton's process step at once (no queue worker): processing.
		e.Model(t, "sale.sale", "confirm", sale)
		status("processing")
		for _, s := range r.events() {
			if s.ev.GetType() != "order" || s.ev.Keys["order"] != number {
				t.Fatalf("unexpected event %v", s.ev)
			}
		}
	})

	t.Run("SinkCreatesQuotedSaleOnce", func(t *testing.T) {
		e.product(t, "SNK-1")
		e.product(t, "SNK-2")
		e.party(t, "C-SNK")
		c := e.connector(t, "")
		ev := &eventv1.Event{Id: "evt-sink-1", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
			OrderNumber: "WEB-1001", Customer: "C-SNK", Currency: "EUR", Lines: []*eventv1.OrderLine{
				{Sku: "SNK-1", Quantity: "3", UnitPrice: "9.90"}, {Sku: "SNK-2", Quantity: "2"}}}}}
		res, err := c.Write(context.Background(), []*eventv1.Event{ev})
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Ref == "" || res[0].EventID != ev.Id {
			t.Fatalf("Write = %+v, %v", res, err)
		}
		ref := res[0].Ref
		type line struct {
			Quantity  float64 `json:"quantity"`
			UnitPrice struct {
				Decimal string `json:"decimal"`
			} `json:"unit_price"`
			Product struct {
				Code string `json:"code"`
			} `json:"product."`
		}
		var sales []struct {
			ID        int64  `json:"id"`
			Number    string `json:"number"`
			State     string `json:"state"`
			Reference string `json:"reference"`
			Party     struct {
				Code string `json:"code"`
			} `json:"party."`
			Lines []line `json:"lines."`
		}
		find := func() {
			sales = nil
			e.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", "WEB-1001"}}, 0, nil, nil,
				[]string{"number", "state", "reference", "party.code", "lines.quantity", "lines.unit_price", "lines.product.code"})
		}
		find()
		if len(sales) != 1 {
			t.Fatalf("%d sales with reference WEB-1001, want 1", len(sales))
		}
		s := sales[0]
		if s.Number != ref || s.State != "quotation" || s.Party.Code != "C-SNK" || len(s.Lines) != 2 {
			t.Fatalf("sale in Tryton: %+v, Ref %q", s, ref)
		}
		got := map[string]string{}
		for _, l := range s.Lines {
			got[l.Product.Code] = fmt.Sprintf("%g@%s", l.Quantity, l.UnitPrice.Decimal)
		}
		// SNK-2 had no unit price in the event: the product's list price applies.
		if got["SNK-1"] != "3@9.90" || got["SNK-2"] != "2@12.50" {
			t.Fatalf("lines %v", got)
		}

		// The same event again, from a fresh connector (as after a restart): same number,
		// no new sale.
		c2 := e.connector(t, "")
		res, err = c2.Write(context.Background(), []*eventv1.Event{ev})
		if err != nil || res[0].Err != nil || res[0].Ref != ref {
			t.Fatalf("second Write = %+v, %v; want Ref %q", res, err, ref)
		}
		find()
		if len(sales) != 1 {
			t.Fatalf("second write created a sale: %d sales", len(sales))
		}

		// A sale created but not quoted (a crash in between) is quoted on the retry.
		ev3 := &eventv1.Event{Id: "evt-sink-3", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
			OrderNumber: "WEB-1003", Customer: "C-SNK", Lines: []*eventv1.OrderLine{{Sku: "SNK-1", Quantity: "1"}}}}}
		var party []int64
		e.Into(t, &party, "party.party", "search", []any{[]any{"code", "=", "C-SNK"}}, 0, nil, nil)
		var addr []struct {
			Addresses []int64 `json:"addresses"`
		}
		e.Into(t, &addr, "party.party", "read", party, []string{"addresses"})
		var snk1 []int64
		e.Into(t, &snk1, "product.product", "search", []any{[]any{"code", "=", "SNK-1"}}, 0, nil, nil)
		var draft []int64
		e.Into(t, &draft, "sale.sale", "create", []any{map[string]any{"party": party[0], "invoice_address": addr[0].Addresses[0],
			"shipment_address": addr[0].Addresses[0], "reference": "WEB-1003", "description": "crossdock:evt-sink-3",
			"lines": []any{[]any{"create", []any{map[string]any{"product": snk1[0], "quantity": 1.0, "unit": e.unit, "unit_price": dec("1"), "description": "x"}}}}}})
		res, err = c.Write(context.Background(), []*eventv1.Event{ev3})
		if err != nil || res[0].Err != nil || res[0].Ref == "" {
			t.Fatalf("Write of a half-written event = %+v, %v", res, err)
		}
		var st []struct {
			State  string `json:"state"`
			Number string `json:"number"`
		}
		e.Into(t, &st, "sale.sale", "search_read", []any{[]any{"reference", "=", "WEB-1003"}}, 0, nil, nil, []string{"state", "number"})
		if len(st) != 1 || st[0].State != "quotation" || st[0].Number != res[0].Ref {
			t.Fatalf("half-written sale after retry: %+v, Ref %q", st, res[0].Ref)
		}

		// Bad data is permanent and names what is wrong; the good event in the same
		// batch is still written.
		bad := func(id, customer, sku string) *eventv1.Event {
			return &eventv1.Event{Id: id, Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
				OrderNumber: "WEB-" + id, Customer: customer, Lines: []*eventv1.OrderLine{{Sku: sku, Quantity: "1"}}}}}
		}
		batch := []*eventv1.Event{
			bad("b1", "C-SNK", "NO-SUCH-SKU"),
			bad("b2", "NO-SUCH-CUSTOMER", "SNK-1"),
			{Id: "b5", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "WEB-b5", Customer: "C-SNK",
				Lines: []*eventv1.OrderLine{{Sku: "SNK-1", Quantity: "1.5"}}}}},
			{Id: "b6", Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{OrderNumber: "WEB-b6", Customer: "C-SNK",
				Currency: "XTS", Lines: []*eventv1.OrderLine{{Sku: "SNK-1", Quantity: "1"}}}}},
			{Id: "b3", Type: "inventory.level", Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: "SNK-1", Location: "WH", OnHand: "1"}}},
			bad("b4", "C-SNK", "SNK-2"),
		}
		res, err = c.Write(context.Background(), batch)
		if err != nil {
			t.Fatal(err)
		}
		// Tryton itself refuses 1.5 units of a product counted in whole units.
		for i, want := range []string{"NO-SUCH-SKU", "NO-SUCH-CUSTOMER", "Quantity", `currency "XTS"`, "inventory.level"} {
			if !errors.Is(res[i].Err, sdk.ErrPermanent) || !strings.Contains(res[i].Err.Error(), want) {
				t.Errorf("result %d = %v, want a permanent error naming %q", i, res[i].Err, want)
			}
		}
		if res[5].Err != nil || res[5].Ref == "" {
			t.Fatalf("good event in a bad batch: %+v", res[5])
		}
		var none []int64
		e.Into(t, &none, "sale.sale", "search", []any{[]any{"reference", "in", []string{"WEB-b1", "WEB-b2", "WEB-b5", "WEB-b6"}}}, 0, nil, nil)
		if len(none) != 0 {
			t.Fatalf("bad events left sales behind: %v", none)
		}
	})

	t.Run("RestartFromPosition", func(t *testing.T) {
		old := e.product(t, "RST-0")
		e.move(t, old, e.supplier, e.storage, 1)
		p := e.product(t, "RST-1")
		r := read(t, e.connector(t, ""), "")
		e.move(t, p, e.supplier, e.storage, 5)
		waitLevel(t, r, "RST-1", "5")
		r.stop()
		pos := r.lastPosition()
		first := map[string]string{} // event content → its position
		for _, s := range r.events() {
			first[key(s.ev)] = s.pos
		}

		// A restart re-reads the lookback window (a minute here: everything) with an empty
		// memory. What it emits again carries the position it had before, so the agent
		// gives it the same id and the control plane drops it.
		c2 := e.connector(t, `,"lookback":"1m"`)
		r2 := read(t, c2, pos)
		waitLevel(t, r2, "RST-1", "5")
		if _, ok := r2.level("RST-0", "WH"); !ok {
			t.Fatal("a one-minute lookback did not re-read RST-0")
		}
		r2.stop()
		// The same connector read again (the host restarting Read after an error) does
		// not trust what it emitted before: the committed position may be older.
		r2b := read(t, c2, pos)
		waitLevel(t, r2b, "RST-1", "5")
		r2b.stop()
		for _, s := range append(r2.events(), r2b.events()...) {
			if old, ok := first[key(s.ev)]; !ok || old != s.pos {
				t.Fatalf("re-emitted %s with position %q, first emitted with %q", key(s.ev), s.pos, old)
			}
		}

		// While the source is down, stock arrives; without lookback, the restart reads
		// only what changed after the position.
		e.move(t, p, e.supplier, e.storage, 2)
		r3 := read(t, e.connector(t, `,"lookback":"0s"`), pos)
		waitLevel(t, r3, "RST-1", "7")
		if _, ok := r3.level("RST-0", "WH"); ok {
			t.Fatal("restart from a position re-read moves before it (RST-0)")
		}

		// A position from another connector version is refused clearly.
		err := tryton.New(nil).Read(context.Background(), "v9;inv=1", nil)
		if err == nil || !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "unknown version") {
			t.Fatalf("Read from a foreign position: %v", err)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		c := tryton.New(nil)
		bad := strings.Replace(string(e.settings("")), e.Password, "not-the-password", 1)
		if err := c.Configure(context.Background(), []byte(bad)); err != nil {
			t.Fatal(err)
		}
		err := c.Health(context.Background())
		if !errors.Is(err, tryton.ErrAuth) || !strings.Contains(err.Error(), `"admin"`) {
			t.Fatalf("Health with a wrong password = %v", err)
		}
	})

	t.Run("LeastPrivilegeUserAndSessionEnd", func(t *testing.T) {
		// The rights docs/connectors.md asks for: the Sales and Stock groups.
		var groups []struct {
			DBID int64 `json:"db_id"`
		}
		e.Into(t, &groups, "ir.model.data", "search_read", []any{[]any{"model", "=", "res.group"},
			[]any{"OR", []any{"module", "=", "sale"}, []any{"module", "=", "stock"}}, []any{"fs_id", "in", []string{"group_sale", "group_stock"}}},
			0, nil, nil, []string{"db_id"})
		if len(groups) != 2 {
			t.Fatalf("groups sale.group_sale and stock.group_stock: %+v", groups)
		}
		const password = "Connector-Pass-42"
		e.Model(t, "res.user", "create", []any{map[string]any{"name": "Crossdock", "login": "crossdock", "password": password,
			"groups": []any{[]any{"add", []int64{groups[0].DBID, groups[1].DBID}}}, "companies": []any{[]any{"add", []int64{e.Company}}}, "company": e.Company}})
		prod := e.product(t, "USR-1")
		e.party(t, "C-USR")
		settings := fmt.Sprintf(`{"url":%q,"database":%q,"user":"crossdock","password":%q,"locations":["WH"],"poll_interval":"50ms"}`, e.URL, e.Database, password)
		c := tryton.New(controlplanetest.Logger(t))
		if err := c.Configure(context.Background(), []byte(settings)); err != nil {
			t.Fatal(err)
		}
		order := func(id string) *eventv1.Event {
			return &eventv1.Event{Id: id, Type: "order", Payload: &eventv1.Event_Order{Order: &eventv1.Order{
				OrderNumber: "WEB-" + id, Customer: "C-USR", Lines: []*eventv1.OrderLine{{Sku: "USR-1", Quantity: "1"}}}}}
		}
		res, err := c.Write(context.Background(), []*eventv1.Event{order("usr-1")})
		if err != nil || res[0].Err != nil {
			t.Fatalf("Write as the connector user: %+v, %v", res, err)
		}
		r := read(t, c, "")
		e.move(t, prod, e.supplier, e.storage, 3)
		waitLevel(t, r, "USR-1", "3")
		r.stop()

		// Tryton ends the session (as after its inactivity timeout); the connector logs in
		// again by itself.
		if err := c.EndSessionForTest(context.Background()); err != nil {
			t.Fatal(err)
		}
		res, err = c.Write(context.Background(), []*eventv1.Event{order("usr-2")})
		if err != nil || res[0].Err != nil || res[0].Ref == "" {
			t.Fatalf("Write after the session ended: %+v, %v", res, err)
		}
	})

	t.Run("ControlPlane", func(t *testing.T) { testControlPlane(t, e) })
	t.Run("PluginHost", func(t *testing.T) { testPluginHost(t, e) })
	t.Run("PartnerOrders", func(t *testing.T) { testPartnerOrders(t, e) })
}

// key identifies an event's content for comparing runs.
func key(ev *eventv1.Event) string {
	b, _ := json.Marshal(map[string]any{"type": ev.Type, "keys": ev.Keys, "level": ev.GetInventoryLevel().GetOnHand(), "status": ev.GetOrder().GetStatus()})
	return string(b)
}
