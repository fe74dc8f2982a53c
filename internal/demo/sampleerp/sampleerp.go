// Package sampleerp is a small ERP database in SQLite for the demo and tests: items,
// stock levels per SKU and location (with updated_at), and sales orders with lines. A
// simulator changes stock and creates and advances orders at a configurable rate; the
// sql connector captures it with the settings from Settings.
package sampleerp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the sample ERP's database
)

// Schema creates the ERP's tables. Timestamps are text in SQLite's CURRENT_TIMESTAMP
// format with milliseconds, UTC (what the sql connector's delay expects); money is text
// so decimals stay exact.
const Schema = `
CREATE TABLE IF NOT EXISTS items (
  sku        TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  uom        TEXT NOT NULL DEFAULT 'EA',
  list_price TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stock_levels (
  id         INTEGER PRIMARY KEY,
  sku        TEXT NOT NULL REFERENCES items(sku),
  location   TEXT NOT NULL,
  on_hand    INTEGER NOT NULL,
  allocated  INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  UNIQUE (sku, location)
);
CREATE INDEX IF NOT EXISTS stock_levels_updated ON stock_levels (updated_at, id);
CREATE TABLE IF NOT EXISTS sales_orders (
  id         INTEGER PRIMARY KEY,
  order_no   TEXT NOT NULL UNIQUE,
  customer   TEXT NOT NULL,
  status     TEXT NOT NULL,
  currency   TEXT NOT NULL,
  total      TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sales_orders_updated ON sales_orders (updated_at, id);
CREATE TABLE IF NOT EXISTS sales_order_lines (
  order_id   INTEGER NOT NULL REFERENCES sales_orders(id),
  line_no    INTEGER NOT NULL,
  sku        TEXT NOT NULL,
  qty        INTEGER NOT NULL,
  unit_price TEXT NOT NULL,
  PRIMARY KEY (order_id, line_no)
);
-- Partners' orders as Crossdock's sql sink stages them (docs/connectors.md, "Partner
-- orders into staging tables"): the import number is the ERP's answer (order.ack
-- erp_order_number); a line for an item the ERP does not have breaks the foreign key,
-- which the sink reports as a refusal (order.ack rejected).
CREATE TABLE IF NOT EXISTS crossdock_order_in (
  import_no   INTEGER PRIMARY KEY,
  order_id    TEXT NOT NULL UNIQUE,
  partner     TEXT NOT NULL,
  po_number   TEXT NOT NULL,
  currency    TEXT,
  status      TEXT NOT NULL DEFAULT 'new',
  received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE TABLE IF NOT EXISTS crossdock_order_line_in (
  order_id   TEXT NOT NULL REFERENCES crossdock_order_in (order_id),
  line_no    TEXT NOT NULL,
  sku        TEXT NOT NULL REFERENCES items (sku),
  quantity   TEXT NOT NULL CHECK (CAST(quantity AS REAL) > 0),
  unit_price TEXT,
  PRIMARY KEY (order_id, line_no)
);
-- Shipments of staged partner orders, captured as shipment events keyed by the order.
CREATE TABLE IF NOT EXISTS shipments (
  id          INTEGER PRIMARY KEY,
  shipment_no TEXT NOT NULL UNIQUE,
  order_id    TEXT NOT NULL,
  carrier     TEXT NOT NULL,
  tracking    TEXT NOT NULL,
  updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shipments_updated ON shipments (updated_at, id);
`

// now is the database's clock in the schema's timestamp format.
const now = `strftime('%Y-%m-%d %H:%M:%f', 'now')`

// Locations are the sample warehouses.
var Locations = []string{"WH-EAST", "WH-WEST", "WH-CENTRAL"}

var customers = []string{"ACME Hardware", "Bolt & Nut Co", "Northwind Supply", "Contoso Builders", "Fabrikam Tools"}

// ERP is an open sample ERP database.
type ERP struct {
	DB   *sql.DB
	DSN  string
	skus int
}

// DSN is the SQLite data source name for the file at path: WAL, so the connector reads
// while the simulator writes (synchronous=NORMAL: a sample need not fsync each commit),
// and a busy timeout instead of "database is locked". Transactions begin IMMEDIATE:
// the simulator and the connector's sink both read then write in one transaction, and a
// deferred one that another writer overtook between its read and its write fails with
// "database is locked" at once, without waiting (which stopped the demo under load).
// Foreign keys are checked (SQLite checks them only when asked): the staging tables
// refuse order lines for unknown items.
func DSN(path string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// Open opens (creating if needed) the ERP at path and seeds skus items, each stocked
// in every location, when it is empty.
func Open(ctx context.Context, path string, skus int) (*ERP, error) {
	dsn := DSN(path)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sampleerp: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; readers use their own connections
	e := &ERP{DB: db, DSN: dsn, skus: skus}
	if err := e.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the database.
func (e *ERP) Close() error { return e.DB.Close() }

// SKU names the i-th item.
func SKU(i int) string { return fmt.Sprintf("SKU-%05d", i) }

func (e *ERP) init(ctx context.Context) error {
	if _, err := e.DB.ExecContext(ctx, Schema); err != nil {
		return fmt.Errorf("sampleerp: schema: %w", err)
	}
	var n int
	if err := e.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM items`).Scan(&n); err != nil {
		return fmt.Errorf("sampleerp: %w", err)
	}
	if n > 0 {
		e.skus = n
		return nil
	}
	return e.tx(ctx, func(tx *sql.Tx) error {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 1; i <= e.skus; i++ {
			price := fmt.Sprintf("%d.%02d", 1+rng.IntN(200), rng.IntN(100))
			if _, err := tx.ExecContext(ctx, `INSERT INTO items (sku, name, list_price, updated_at) VALUES (?, ?, ?, `+now+`)`,
				SKU(i), fmt.Sprintf("Item %d", i), price); err != nil {
				return err
			}
			for _, loc := range Locations {
				if _, err := tx.ExecContext(ctx, `INSERT INTO stock_levels (sku, location, on_hand, updated_at) VALUES (?, ?, ?, `+now+`)`,
					SKU(i), loc, 50+rng.IntN(500)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (e *ERP) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := e.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sampleerp: begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return fmt.Errorf("sampleerp: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sampleerp: commit: %w", err)
	}
	return nil
}

// Simulator makes business happen in an ERP: stock received and counted, orders
// placed (allocating stock), confirmed and shipped (taking it out).
type Simulator struct {
	erp *ERP
	rng *rand.Rand
	// OrderEvery: one change in OrderEvery creates an order (default 5).
	OrderEvery int
	orders     int
}

// NewSimulator returns a simulator for e, deterministic for a seed.
func NewSimulator(e *ERP, seed uint64) *Simulator {
	return &Simulator{erp: e, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), OrderEvery: 5}
}

// Step makes one change.
func (s *Simulator) Step(ctx context.Context) error {
	every := s.OrderEvery
	if every <= 0 {
		every = 5
	}
	switch r := s.rng.IntN(every); {
	case r == 0:
		return s.newOrder(ctx)
	case r == 2 && s.rng.IntN(10) == 0:
		return s.shipPartnerOrder(ctx)
	case r == 1 && s.orders > 0:
		return s.advanceOrder(ctx)
	default:
		return s.stockChange(ctx)
	}
}

// Run makes perSecond changes a second until ctx ends.
func (s *Simulator) Run(ctx context.Context, perSecond float64) error {
	if perSecond <= 0 {
		return fmt.Errorf("sampleerp: rate must be positive")
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Step(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
}

func (s *Simulator) sku() string { return SKU(1 + s.rng.IntN(s.erp.skus)) }

// stockChange receives goods or books a count difference at one location.
func (s *Simulator) stockChange(ctx context.Context) error {
	delta := s.rng.IntN(40) - 10
	_, err := s.erp.DB.ExecContext(ctx, `UPDATE stock_levels SET on_hand = MAX(allocated, on_hand + ?), updated_at = `+now+
		` WHERE sku = ? AND location = ?`, delta, s.sku(), Locations[s.rng.IntN(len(Locations))])
	if err != nil {
		return fmt.Errorf("sampleerp: stock change: %w", err)
	}
	return nil
}

// newOrder places an order of one to three lines from one location and allocates the
// stock.
func (s *Simulator) newOrder(ctx context.Context) error {
	s.orders++
	loc := Locations[s.rng.IntN(len(Locations))]
	return s.erp.tx(ctx, func(tx *sql.Tx) error {
		type line struct {
			sku   string
			qty   int
			price string
		}
		var lines []line
		var total int64
		for i, n := 0, 1+s.rng.IntN(3); i < n; i++ {
			l := line{sku: s.sku(), qty: 1 + s.rng.IntN(5)}
			if err := tx.QueryRowContext(ctx, `SELECT list_price FROM items WHERE sku = ?`, l.sku).Scan(&l.price); err != nil {
				return err
			}
			c, err := cents(l.price)
			if err != nil {
				return err
			}
			total += c * int64(l.qty)
			lines = append(lines, l)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO sales_orders (order_no, customer, status, currency, total, updated_at) VALUES (?, ?, 'open', 'USD', ?, `+now+`)`,
			fmt.Sprintf("SO-%06d", s.orders), customers[s.rng.IntN(len(customers))], fmt.Sprintf("%d.%02d", total/100, total%100))
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i, l := range lines {
			if _, err := tx.ExecContext(ctx, `INSERT INTO sales_order_lines (order_id, line_no, sku, qty, unit_price) VALUES (?, ?, ?, ?, ?)`,
				id, i+1, l.sku, l.qty, l.price); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE stock_levels SET allocated = allocated + ?, on_hand = MAX(on_hand, allocated + ?), updated_at = `+now+
				` WHERE sku = ? AND location = ?`, l.qty, l.qty, l.sku, loc); err != nil {
				return err
			}
		}
		return nil
	})
}

// advanceOrder moves the oldest unfinished order on: open → confirmed → shipped.
func (s *Simulator) advanceOrder(ctx context.Context) error {
	_, err := s.erp.DB.ExecContext(ctx, `UPDATE sales_orders SET status = CASE status WHEN 'open' THEN 'confirmed' ELSE 'shipped' END, updated_at = `+now+
		` WHERE id = (SELECT id FROM sales_orders WHERE status <> 'shipped' ORDER BY id LIMIT 1)`)
	if err != nil {
		return fmt.Errorf("sampleerp: advance order: %w", err)
	}
	return nil
}

// ShipAfter is how long a staged partner order waits before the simulator ships it.
var ShipAfter = 5 * time.Second

// shipPartnerOrder ships the oldest partner order staged at least ShipAfter ago: a
// shipment row (captured as a shipment event keyed by the Crossdock order id) and the
// staged order marked shipped.
func (s *Simulator) shipPartnerOrder(ctx context.Context) error {
	return s.erp.tx(ctx, func(tx *sql.Tx) error {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT order_id FROM crossdock_order_in WHERE status = 'new'
  AND received_at <= strftime('%Y-%m-%d %H:%M:%f', 'now', ?) ORDER BY import_no LIMIT 1`,
			fmt.Sprintf("-%.3f seconds", ShipAfter.Seconds())).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		n := s.rng.IntN(1000000)
		if _, err := tx.ExecContext(ctx, `INSERT INTO shipments (shipment_no, order_id, carrier, tracking, updated_at)
  VALUES ('SH-' || (SELECT COUNT(*) + 1 FROM shipments), ?, 'UPSN', ?, `+now+`)`, id, fmt.Sprintf("1Z%06d", n)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE crossdock_order_in SET status = 'shipped' WHERE order_id = ?`, id)
		return err
	})
}

func cents(price string) (int64, error) {
	whole, frac, _ := strings.Cut(price, ".")
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("price %q: %w", price, err)
	}
	f, err := strconv.ParseInt((frac + "00")[:2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("price %q: %w", price, err)
	}
	return w*100 + f, nil
}

// Settings are the sql connector's settings capturing the ERP at dsn: stock levels,
// orders (with their lines) and shipments incrementally, items as a periodic snapshot;
// and, as a sink, partners' orders into the staging tables (the import number answers
// the order). The one
// second delay keeps the equal-timestamp rule safe at the schema's millisecond
// timestamps: a row is read only once no new write can share its timestamp.
func Settings(dsn string) map[string]any {
	return map[string]any{
		"driver": "sqlite", "dsn": dsn, "poll_interval": "1s", "batch_size": 500,
		"tables": []any{
			map[string]any{
				"name": "stock_levels", "timestamp_column": "updated_at", "key_column": "id", "delay": "1s",
				"query": "SELECT id, sku, location, on_hand, allocated, on_hand - allocated AS available, updated_at FROM stock_levels",
				"mapping": map[string]any{"type": "inventory.level", "fields": map[string]string{
					"sku": "sku", "location": "location", "on_hand": "on_hand", "allocated": "allocated", "available": "available"},
					"values": map[string]string{"unit_of_measure": "EA"}},
			},
			map[string]any{
				"name": "sales_orders", "key_column": "id", "timestamp_column": "updated_at", "delay": "1s",
				"query": `SELECT o.id, o.order_no, o.customer, o.status, o.currency, o.total, o.updated_at,
  (SELECT json_group_array(json_object('line_number', CAST(l.line_no AS TEXT), 'sku', l.sku, 'quantity', l.qty, 'unit_price', l.unit_price))
     FROM sales_order_lines l WHERE l.order_id = o.id) AS lines
FROM sales_orders o`,
				"mapping": map[string]any{"type": "order", "fields": map[string]string{
					"order_number": "order_no", "customer": "customer", "status": "status", "currency": "currency",
					"total": "total", "lines": "lines"},
					"values": map[string]string{"channel": "erp"}},
			},
			map[string]any{
				"name": "shipments", "key_column": "id", "timestamp_column": "updated_at", "delay": "1s",
				"query": `SELECT s.id, s.shipment_no, s.order_id, s.carrier, s.tracking, s.updated_at,
  (SELECT json_group_array(json_object('order_line_number', l.line_no, 'sku', l.sku, 'quantity', l.quantity))
     FROM crossdock_order_line_in l WHERE l.order_id = s.order_id) AS lines
FROM shipments s`,
				"mapping": map[string]any{"type": "shipment", "fields": map[string]string{
					"shipment_number": "shipment_no", "order_number": "order_id", "carrier_scac": "carrier", "tracking_number": "tracking",
					"lines": "lines"},
					"values": map[string]string{"status": "shipped"}},
			},
			map[string]any{
				"table": "items", "mode": "snapshot", "key_column": "sku", "interval": "1h",
				"mapping": map[string]any{"type": "item", "fields": map[string]string{"sku": "sku", "name": "name", "unit_of_measure": "uom"}},
			},
		},
		"sink": map[string]any{
			"header_statement": `INSERT INTO crossdock_order_in (order_id, partner, po_number, currency)
  VALUES (:order_number, :partner, :purchase_order_number, :currency) RETURNING 'IMP-' || import_no`,
			"statement": `INSERT INTO crossdock_order_line_in (order_id, line_no, sku, quantity, unit_price)
  VALUES (:order_number, :line, :sku, :qty, :price)`,
			"params":   map[string]string{"line": "lines.line_number", "sku": "lines.sku", "qty": "lines.quantity", "price": "lines.unit_price"},
			"for_each": "lines", "types": []string{"order"}, "returns_ref": true, "create_idempotency_table": true,
		},
	}
}
