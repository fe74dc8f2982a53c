package pgcdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

const waitLong = 30 * time.Second

// db is a test PostgreSQL with wal_level=logical and the tables the tests capture:
// stock (published, inventory levels), prices (published, deletes skipped) and noise
// (never published).
type db struct {
	pg   *testsvc.Postgres
	conn *pgx.Conn
}

func startDB(t *testing.T, opts testsvc.PostgresOptions) *db {
	t.Helper()
	pg := testsvc.StartPostgres(t, opts)
	ctx := testsvc.Context(t)
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	d := &db{pg: pg, conn: conn}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(pg.Dir, "postgres.log"))
			t.Logf("postgres.log:\n%s", b)
		}
	})
	d.exec(t, `CREATE TABLE stock (sku text, location text, qty numeric NOT NULL, PRIMARY KEY (sku, location));
CREATE TABLE prices (sku text PRIMARY KEY, amount numeric(12,2) NOT NULL);
CREATE TABLE noise (id bigserial PRIMARY KEY, payload text)`)
	return d
}

func pgxConnect(dsn string) (*pgx.Conn, error) { return pgx.Connect(context.Background(), dsn) }

func (d *db) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := d.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (d *db) lsn(t *testing.T, sql string) pglogrepl.LSN {
	t.Helper()
	var s *string
	if err := d.conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func (d *db) confirmed(t *testing.T, slot string) pglogrepl.LSN {
	return d.lsn(t, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '"+slot+"'")
}

func settings(dsn string, mod func(m map[string]any)) []byte {
	m := map[string]any{
		"dsn": dsn, "slot": "crossdock", "publication": "crossdock",
		"create_slot": true, "create_publication": true,
		"status_interval": "50ms",
		"tables": []any{
			map[string]any{"name": "stock", "on_delete": "zero", "mapping": map[string]any{
				"type": "inventory.level", "fields": map[string]string{"sku": "sku", "location": "location", "on_hand": "qty"}}},
			map[string]any{"name": "public.prices", "mapping": map[string]any{
				"type": "price", "fields": map[string]string{"sku": "sku", "amount": "amount"}}},
		},
	}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func newConnector(t *testing.T, raw []byte) *Connector {
	t.Helper()
	c := New(nil)
	if err := c.Configure(context.Background(), raw); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return c
}

// agent stands in for the agent: it records batches and, when autoAck, acks each one
// after "committing" it, as the agent does after its outbox transaction.
type agent struct {
	c       *Connector
	autoAck bool
	// block, when set, is called inside emit before the batch is recorded.
	block func(b sdk.Batch)

	mu      sync.Mutex
	batches []sdk.Batch
}

func (a *agent) emit(ctx context.Context, b sdk.Batch) error {
	if a.block != nil {
		a.block(b)
	}
	a.mu.Lock()
	a.batches = append(a.batches, b)
	a.mu.Unlock()
	if a.autoAck {
		return a.c.Ack(ctx, b.Position)
	}
	return nil
}

func (a *agent) got() []sdk.Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]sdk.Batch(nil), a.batches...)
}

func (a *agent) waitBatches(t *testing.T, n int) []sdk.Batch {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("batches so far: %q", describeAll(a.got()))
		}
	}()
	testutil.WaitFor(t, waitLong, fmt.Sprintf("%d batches", n), func() bool { return len(a.got()) >= n })
	return a.got()
}

// reader runs Read until stopped.
type reader struct {
	cancel context.CancelFunc
	done   chan error
}

func startRead(t *testing.T, c *Connector, from string, a *agent) *reader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &reader{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := c.Read(ctx, from, a.emit)
		if err != nil {
			t.Logf("Read returned: %v", err)
		}
		r.done <- err
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *reader) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Read after cancel: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Read did not return after cancel")
	}
}

// waitStreaming waits until Read has started replication on the slot. (The slot is
// also active while it is being created, before its consistent point: changes committed
// then are not decoded.)
func waitStreaming(t testing.TB, d *db, slot string) {
	t.Helper()
	testutil.WaitFor(t, waitLong, "replication on slot "+slot, func() bool {
		var ok bool
		err := d.conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_replication_slots s
JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1 AND r.state IN ('catchup', 'streaming'))`, slot).Scan(&ok)
		return err == nil && ok
	})
}

// describe renders a batch as "sku@location=on_hand" / "price sku=amount" strings.
func describe(b sdk.Batch) []string {
	var out []string
	for _, ev := range b.Events {
		switch p := ev.Payload.(type) {
		case *eventv1.Event_InventoryLevel:
			out = append(out, fmt.Sprintf("%s@%s=%s", p.InventoryLevel.Sku, p.InventoryLevel.Location, p.InventoryLevel.OnHand))
		case *eventv1.Event_Price:
			out = append(out, fmt.Sprintf("price %s=%s", p.Price.Sku, p.Price.Amount))
		default:
			out = append(out, ev.Type)
		}
	}
	return out
}

func describeAll(bs []sdk.Batch) []string {
	var out []string
	for _, b := range bs {
		out = append(out, strings.Join(describe(b), ","))
	}
	return out
}

func equal(a, b []string) bool {
	return strings.Join(a, "|") == strings.Join(b, "|")
}

func TestCaptureInsertUpdateDelete(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	c := newConnector(t, settings(d.pg.DSN, nil))
	a := &agent{c: c, autoAck: true}
	startRead(t, c, "", a)
	waitStreaming(t, d, "crossdock")

	before := d.lsn(t, "SELECT pg_current_wal_lsn()::text")
	d.exec(t, `BEGIN; INSERT INTO stock VALUES ('A-100', 'WH-EAST', 120), ('B-200', 'WH-EAST', 5.5); INSERT INTO noise (payload) VALUES ('x'); COMMIT`)
	d.exec(t, `UPDATE stock SET qty = 100 WHERE sku = 'A-100'`)
	d.exec(t, `DELETE FROM stock WHERE sku = 'B-200'`)
	d.exec(t, `UPDATE stock SET location = 'WH-WEST' WHERE sku = 'A-100'`) // key change: old location drops to 0
	d.exec(t, `INSERT INTO prices VALUES ('A-100', 12.50)`)
	d.exec(t, `DELETE FROM prices`)                                   // on_delete skip: no batch
	d.exec(t, `INSERT INTO noise (payload) VALUES ('not published')`) // no batch
	d.exec(t, `INSERT INTO stock VALUES ('C-300', 'WH-EAST', 1)`)

	bs := a.waitBatches(t, 6)
	want := []string{
		"A-100@WH-EAST=120,B-200@WH-EAST=5.5",
		"A-100@WH-EAST=100",
		"B-200@WH-EAST=0",
		"A-100@WH-EAST=0,A-100@WH-WEST=100",
		"price A-100=12.50",
		"C-300@WH-EAST=1",
	}
	if got := describeAll(bs); !equal(got, want) {
		t.Fatalf("batches:\n got %q\nwant %q", got, want)
	}
	prev := before
	for i, b := range bs {
		p, err := ParsePosition(b.Position)
		if err != nil || p.HasOrdinal {
			t.Fatalf("batch %d position %q: %v", i, b.Position, err)
		}
		if p.LSN <= prev {
			t.Fatalf("batch %d commit LSN %s not after %s", i, p.LSN, prev)
		}
		prev = p.LSN
		if len(b.EventPositions) != len(b.Events) {
			t.Fatalf("batch %d: %d event positions for %d events", i, len(b.EventPositions), len(b.Events))
		}
		for j, ep := range b.EventPositions {
			if want := (Position{LSN: p.LSN, Ordinal: uint64(j), HasOrdinal: true}).String(); ep != want {
				t.Fatalf("batch %d event %d position %q, want %q", i, j, ep, want)
			}
			ev := b.Events[j]
			if ev.OccurredAt == nil || ev.OccurredAt.AsTime().Before(time.Now().Add(-time.Hour)) {
				t.Fatalf("batch %d event %d occurred_at %v, want the commit time", i, j, ev.OccurredAt)
			}
		}
	}
	if k := bs[0].Events[0].Keys; k["sku"] != "A-100" || k["location"] != "WH-EAST" {
		t.Fatalf("keys %v", k)
	}
	if a.got()[len(a.got())-1].Position != bs[5].Position || len(a.got()) != 6 {
		t.Fatalf("extra batches: %q", describeAll(a.got()))
	}
}

func TestRestartFromPosition(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	raw := settings(d.pg.DSN, nil)
	c := newConnector(t, raw)
	a := &agent{c: c}
	r := startRead(t, c, "", a)
	waitStreaming(t, d, "crossdock")
	for i := 1; i <= 3; i++ {
		d.exec(t, `INSERT INTO stock VALUES ($1, 'WH', $2)`, fmt.Sprintf("T%d", i), i)
	}
	d.exec(t, `BEGIN; INSERT INTO stock VALUES ('M0', 'WH', 0), ('M1', 'WH', 1), ('M2', 'WH', 2); COMMIT`)
	first := a.waitBatches(t, 4)
	// The agent committed only the first transaction before it crashed.
	if err := c.Ack(context.Background(), first[0].Position); err != nil {
		t.Fatal(err)
	}
	acked, _ := ParsePosition(first[0].Position)
	testutil.WaitFor(t, waitLong, "slot confirms the acked transaction", func() bool {
		return d.confirmed(t, "crossdock") >= acked.LSN
	})
	r.stop(t)
	if c2 := d.confirmed(t, "crossdock"); c2 > acked.LSN {
		t.Fatalf("slot confirmed %s, beyond the only acked position %s", c2, acked.LSN)
	}
	d.exec(t, `INSERT INTO stock VALUES ('T5', 'WH', 5)`) // while stopped

	// A new connector (a restarted plugin) from the agent's committed position.
	c = newConnector(t, raw)
	a2 := &agent{c: c}
	r = startRead(t, c, first[0].Position, a2)
	again := a2.waitBatches(t, 4)
	if !equal(describeAll(again[:3]), describeAll(first[1:])) {
		t.Fatalf("after restart:\n got %q\nwant %q", describeAll(again[:3]), describeAll(first[1:]))
	}
	for i := range 3 {
		if again[i].Position != first[i+1].Position || !equal(again[i].EventPositions, first[i+1].EventPositions) {
			t.Fatalf("batch %d positions changed across restart: %q %q vs %q %q", i, again[i].Position, again[i].EventPositions, first[i+1].Position, first[i+1].EventPositions)
		}
	}
	if got := describe(again[3]); !equal(got, []string{"T5@WH=5"}) {
		t.Fatalf("batch written while stopped: %q", got)
	}
	r.stop(t)

	// From an event position (the first event of the M transaction): the rest of it.
	c = newConnector(t, raw)
	a3 := &agent{c: c}
	r = startRead(t, c, first[3].EventPositions[0], a3)
	bs := a3.waitBatches(t, 2)
	if got := describeAll(bs); !equal(got, []string{"M1@WH=1,M2@WH=2", "T5@WH=5"}) {
		t.Fatalf("after restart from %s: %q", first[3].EventPositions[0], got)
	}
	if !equal(bs[0].EventPositions, first[3].EventPositions[1:]) {
		t.Fatalf("event positions %q, want %q", bs[0].EventPositions, first[3].EventPositions[1:])
	}
	r.stop(t)

	// From the last committed position, acking as it goes: only what is new, and the
	// slot follows.
	c = newConnector(t, raw)
	a4 := &agent{c: c, autoAck: true}
	startRead(t, c, again[3].Position, a4)
	d.exec(t, `INSERT INTO stock VALUES ('T7', 'WH', 7)`)
	bs = a4.waitBatches(t, 1)
	if got := describeAll(bs); !equal(got, []string{"T7@WH=7"}) {
		t.Fatalf("after restart at the last position: %q", got)
	}
	p, _ := ParsePosition(bs[0].Position)
	testutil.WaitFor(t, waitLong, "slot confirms the acked batch", func() bool {
		return d.confirmed(t, "crossdock") >= p.LSN
	})
}

// The published tables are quiet while another table is busy: once everything emitted
// is acked, the slot's confirmed LSN follows the server's WAL end, so the slot does not
// hold back WAL. Before the ack it must not move past the unacked transaction.
func TestWALNotRetainedOnQuietPublication(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	c := newConnector(t, settings(d.pg.DSN, nil))
	a := &agent{c: c}
	startRead(t, c, "", a)
	waitStreaming(t, d, "crossdock")

	d.exec(t, `INSERT INTO stock VALUES ('A-100', 'WH', 1)`)
	b := a.waitBatches(t, 1)[0]
	unacked, _ := ParsePosition(b.Position)
	noise := func() pglogrepl.LSN {
		for range 8 {
			d.exec(t, `INSERT INTO noise (payload) SELECT repeat('x', 1000) FROM generate_series(1, 1000)`)
		}
		return d.lsn(t, "SELECT pg_current_wal_lsn()::text")
	}
	end := noise()
	// The connector has seen the server's keepalives past the noise (it reports them as
	// written) but must not confirm past the transaction the agent has not acked.
	testutil.WaitFor(t, waitLong, "connector reports the noise as received", func() bool {
		return d.lsn(t, "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = 'crossdock-pgcdc'") >= end
	})
	if got := d.confirmed(t, "crossdock"); got > unacked.LSN {
		t.Fatalf("slot confirmed %s past the unacked transaction at %s", got, unacked.LSN)
	}

	if err := c.Ack(context.Background(), b.Position); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLong, "slot confirms past the noise after the ack", func() bool {
		return d.confirmed(t, "crossdock") >= end
	})
	// A quiet period with more noise: the slot keeps up without any published change.
	end = noise()
	testutil.WaitFor(t, waitLong, "slot confirms past the second noise", func() bool {
		return d.confirmed(t, "crossdock") >= end
	})
	var lag int64
	if err := d.conn.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = 'crossdock'`).Scan(&lag); err != nil {
		t.Fatal(err)
	}
	t.Logf("slot lag after the quiet period: %d bytes (noise written: ~16 MB)", lag)
	if len(a.got()) != 1 {
		t.Fatalf("noise produced batches: %q", describeAll(a.got()))
	}
}

// A slot and publication made by the DBA are used as they are, and a slot that exists is
// reused (not recreated) even with create_slot on: changes made while the connector was
// stopped arrive.
func TestSlotReuse(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	d.exec(t, `CREATE PUBLICATION crossdock FOR TABLE stock, prices`)
	d.exec(t, `SELECT pg_create_logical_replication_slot('crossdock', 'pgoutput')`)
	d.exec(t, `INSERT INTO stock VALUES ('BEFORE', 'WH', 1)`) // after the slot, before any Read
	noCreate := settings(d.pg.DSN, func(m map[string]any) { m["create_slot"], m["create_publication"] = false, false })

	c := newConnector(t, noCreate)
	a := &agent{c: c, autoAck: true}
	r := startRead(t, c, "", a)
	bs := a.waitBatches(t, 1)
	if got := describeAll(bs); !equal(got, []string{"BEFORE@WH=1"}) {
		t.Fatalf("first session: %q", got)
	}
	p, _ := ParsePosition(bs[0].Position)
	testutil.WaitFor(t, waitLong, "slot confirms the batch", func() bool { return d.confirmed(t, "crossdock") >= p.LSN })
	r.stop(t)

	d.exec(t, `INSERT INTO stock VALUES ('WHILE-STOPPED', 'WH', 2)`)
	c = newConnector(t, settings(d.pg.DSN, nil)) // create_slot: true
	a = &agent{c: c, autoAck: true}
	r = startRead(t, c, bs[0].Position, a)
	bs = a.waitBatches(t, 1)
	if got := describeAll(bs); !equal(got, []string{"WHILE-STOPPED@WH=2"}) {
		t.Fatalf("second session: %q", got)
	}
	var slots int
	if err := d.conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots").Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 1 {
		t.Fatalf("%d replication slots, want the one reused", slots)
	}
	r.stop(t)

	// A slot dropped behind the connector's back is recreated (create_slot), loudly:
	// what happened in between was never decoded.
	testutil.WaitFor(t, waitLong, "the server to release the slot", func() bool {
		var active bool
		err := d.conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = 'crossdock'").Scan(&active)
		return err == nil && !active
	})
	d.exec(t, `SELECT pg_drop_replication_slot('crossdock')`)
	var logs testutil.LogBuffer
	c = New(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := c.Configure(context.Background(), settings(d.pg.DSN, nil)); err != nil {
		t.Fatal(err)
	}
	r = startRead(t, c, bs[0].Position, &agent{c: c})
	waitStreaming(t, d, "crossdock")
	r.stop(t)
	if !strings.Contains(logs.String(), "changes between the two were not captured") {
		t.Fatalf("no warning about the recreated slot in:\n%s", logs.String())
	}
}

// readErr runs Read until it fails and returns the error.
func readErr(t *testing.T, c *Connector, from string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	err := c.Read(ctx, from, func(context.Context, sdk.Batch) error { return nil })
	if err == nil {
		t.Fatal("Read returned nil, want an error")
	}
	return err
}

func wantErr(t *testing.T, err error, target error, parts ...string) {
	t.Helper()
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %q is not %v", err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not say %q", err, p)
		}
	}
}

func TestSetupErrors(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	noPub := settings(d.pg.DSN, func(m map[string]any) { m["create_publication"] = false })
	err := readErr(t, newConnector(t, noPub), "")
	wantErr(t, err, ErrNoPublication, "does not exist", "CREATE PUBLICATION", "create_publication: true")
	if !errors.Is(err, sdk.ErrPermanent) {
		t.Fatalf("%v is not permanent", err)
	}
	d.exec(t, `CREATE PUBLICATION crossdock FOR TABLE stock`)
	wantErr(t, readErr(t, newConnector(t, noPub), ""), ErrNoPublication, "does not include public.prices", "ALTER PUBLICATION")

	// A table without a primary key is not added: PostgreSQL would then refuse its
	// updates and deletes.
	d.exec(t, `CREATE TABLE nopk (sku text, location text, qty numeric)`)
	withNoPK := settings(d.pg.DSN, func(m map[string]any) {
		m["tables"] = append(m["tables"].([]any), map[string]any{"name": "nopk", "mapping": map[string]any{
			"type": "inventory.level", "fields": map[string]string{"sku": "sku", "location": "location", "on_hand": "qty"}}})
	})
	wantErr(t, readErr(t, newConnector(t, withNoPK), ""), sdk.ErrPermanent, "public.nopk", "REPLICA IDENTITY FULL")
	var n int
	if err := d.conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'nopk'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("nopk published (%d, %v)", n, err)
	}

	noSlot := settings(d.pg.DSN, func(m map[string]any) { m["create_slot"] = false })
	wantErr(t, readErr(t, newConnector(t, noSlot), ""), ErrNoSlot, `"crossdock"`, "create_slot: true", "pg_create_logical_replication_slot")

	// A mapped column the table lacks, found when the table's first change arrives.
	badCol := settings(d.pg.DSN, func(m map[string]any) {
		m["slot"] = "badcol"
		m["tables"] = []any{map[string]any{"name": "stock", "mapping": map[string]any{
			"type": "inventory.level", "fields": map[string]string{"sku": "sku", "location": "warehouse", "on_hand": "qty"}}}}
	})
	c := newConnector(t, badCol)
	done := make(chan error, 1)
	go func() {
		done <- c.Read(context.Background(), "", func(context.Context, sdk.Batch) error { return nil })
	}()
	waitStreaming(t, d, "badcol")
	d.exec(t, `INSERT INTO stock VALUES ('X', 'WH', 1)`)
	select {
	case err := <-done:
		wantErr(t, err, sdk.ErrPermanent, "tables[0].mapping", `"warehouse"`, "public.stock")
	case <-time.After(waitLong):
		t.Fatal("Read did not fail on an unknown column")
	}

	// A position from another (newer) database.
	wantErr(t, readErr(t, newConnector(t, settings(d.pg.DSN, nil)), "v1:FF/0"), sdk.ErrPermanent, "ahead of the server's WAL")

	// A slot another consumer holds.
	c = newConnector(t, settings(d.pg.DSN, nil))
	startRead(t, c, "", &agent{c: c})
	waitStreaming(t, d, "crossdock")
	busy := settings(d.pg.DSN, func(m map[string]any) { m["slot_busy_timeout"] = "200ms" })
	wantErr(t, readErr(t, newConnector(t, busy), ""), nil, "in use by server process")
}

func TestWALLevelNotLogical(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{})
	c := newConnector(t, settings(d.pg.DSN, nil))
	wantErr(t, readErr(t, c, ""), ErrWALLevel, "wal_level=replica", "wal_level = logical")
	err := c.Health(context.Background())
	wantErr(t, err, ErrWALLevel)
}

func TestUnreachableServer(t *testing.T) {
	dsn := fmt.Sprintf("postgres://crossdock:s3cret@127.0.0.1:%d/erp?sslmode=disable&connect_timeout=5", testsvc.FreePort(t))
	c := newConnector(t, settings(dsn, nil))
	err := readErr(t, c, "")
	wantErr(t, err, nil, "connect to PostgreSQL at 127.0.0.1")
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows the password: %v", err)
	}
	if err := c.Health(context.Background()); err == nil {
		t.Fatal("Health of an unreachable server: nil")
	}
}

// While the agent holds emit (back-pressure), the connector keeps answering the server,
// which would otherwise end the connection after wal_sender_timeout.
func TestBlockedEmitKeepsConnection(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true, Settings: []string{"wal_sender_timeout=1s"}})
	watch, err := pgx.Connect(testsvc.Context(t), d.pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	c := newConnector(t, settings(d.pg.DSN, nil))
	a := &agent{c: c, autoAck: true}
	var once sync.Once
	blocked, release := make(chan struct{}), make(chan struct{})
	a.block = func(sdk.Batch) {
		// Hold the first batch until the test goroutine releases it.
		once.Do(func() {
			close(blocked)
			<-release
		})
	}
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	r := startRead(t, c, "", a)
	waitStreaming(t, d, "crossdock")
	d.exec(t, `INSERT INTO stock VALUES ('HELD', 'WH', 1)`)
	select {
	case <-blocked:
	case <-time.After(waitLong):
		t.Fatal("the first batch never reached emit")
	}
	// While emit is held, the server must hear from the connector for three times
	// wal_sender_timeout after the block began.
	var start time.Time
	if err := watch.QueryRow(context.Background(), "SELECT now()").Scan(&start); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLong, "standby replies during the blocked emit", func() bool {
		var reply *time.Time
		err := watch.QueryRow(context.Background(), "SELECT reply_time FROM pg_stat_replication WHERE application_name = 'crossdock-pgcdc'").Scan(&reply)
		return err == nil && reply != nil && reply.Sub(start) > 3*time.Second
	})
	select {
	case err := <-r.done:
		t.Fatalf("Read ended while emit was held: %v", err)
	default:
	}
	close(release)
	a.waitBatches(t, 1)
	d.exec(t, `INSERT INTO stock VALUES ('AFTER', 'WH', 2)`)
	bs := a.waitBatches(t, 2)
	if got := describeAll(bs); !equal(got, []string{"HELD@WH=1", "AFTER@WH=2"}) {
		t.Fatalf("batches %q", got)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Read ended: %v", err)
	default:
	}
}

// An update that leaves a large (TOASTed) column alone does not resend it: with
// REPLICA IDENTITY FULL the connector takes it from the old row; without, the row
// cannot be mapped and is skipped, and capture goes on.
func TestUnchangedToastedColumn(t *testing.T) {
	d := startDB(t, testsvc.PostgresOptions{Logical: true})
	d.exec(t, `CREATE TABLE items_full (sku text PRIMARY KEY, name text, price numeric);
ALTER TABLE items_full REPLICA IDENTITY FULL;
CREATE TABLE items_default (sku text PRIMARY KEY, name text, price numeric)`)
	item := func(name string) map[string]any {
		return map[string]any{"name": name, "mapping": map[string]any{"type": "item", "fields": map[string]string{"sku": "sku", "name": "name"}}}
	}
	c := newConnector(t, settings(d.pg.DSN, func(m map[string]any) {
		m["tables"] = []any{item("items_full"), item("items_default")}
	}))
	a := &agent{c: c, autoAck: true}
	startRead(t, c, "", a)
	waitStreaming(t, d, "crossdock")
	// ~160 kB of incompressible text: stored out of line.
	d.exec(t, `BEGIN;
INSERT INTO items_full SELECT 'F', string_agg(md5(g::text), ''), 1 FROM generate_series(1, 5000) g;
INSERT INTO items_default SELECT 'D', string_agg(md5(g::text), ''), 1 FROM generate_series(1, 5000) g;
COMMIT`)
	d.exec(t, `BEGIN; UPDATE items_full SET price = 2; UPDATE items_default SET price = 2; COMMIT`)
	d.exec(t, `INSERT INTO items_default VALUES ('AFTER', 'small', 3)`)
	bs := a.waitBatches(t, 3)
	var long string
	if err := d.conn.QueryRow(context.Background(), "SELECT name FROM items_full").Scan(&long); err != nil {
		t.Fatal(err)
	}
	names := func(b sdk.Batch) []string {
		var out []string
		for _, ev := range b.Events {
			it := ev.GetItem()
			n := it.GetName()
			if n == long {
				n = "<long>"
			}
			out = append(out, it.GetSku()+"="+n)
		}
		return out
	}
	for i, want := range [][]string{{"F=<long>", "D=<long>"}, {"F=<long>"}, {"AFTER=small"}} {
		if got := names(bs[i]); !equal(got, want) {
			t.Fatalf("batch %d: %q, want %q", i, got, want)
		}
	}
}
