// Package pgcdc is the PostgreSQL change-data-capture connector: it consumes a logical
// replication slot (output plugin pgoutput) and emits the inserts, updates and deletes
// of the configured tables as canonical events, one batch per transaction.
//
// Positions are commit LSNs (see Position). A batch is a whole transaction, so a
// transaction is never half-emitted; its events get the positions commit LSN + ordinal,
// so their ids are the same however often the transaction is decoded again. The slot's
// confirmed LSN only moves when the agent has acked (the batch is fsynced in its
// outbox), or, while every emitted batch is acked and no transaction is open, to the
// WAL end the server reports in its keepalives: that is what stops a slot on a quiet
// publication from holding back WAL written by other, busy tables.
package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/crossdock/crossdock/plugins/sdk"
)

// Version is the connector's own version.
const Version = "1.0.0"

// Errors Read and Health return (wrapped, with the details).
var (
	// ErrWALLevel: the server's wal_level is not logical.
	ErrWALLevel = errors.New("wal_level is not logical")
	// ErrNoSlot: the replication slot does not exist and create_slot is off.
	ErrNoSlot = errors.New("replication slot does not exist")
	// ErrNoPublication: the publication does not exist (or lacks a configured table)
	// and create_publication is off.
	ErrNoPublication = errors.New("publication missing or incomplete")
	// ErrSlotMismatch: a slot of that name exists but is not a pgoutput slot of this
	// database.
	ErrSlotMismatch = errors.New("replication slot is not usable")
)

// Connector is the pgcdc source. The zero value is not usable: call New.
type Connector struct {
	log *slog.Logger
	cfg *config

	mu      sync.Mutex
	reading bool
	// emitted is the commit LSN of the last batch handed to emit in this Read (or the
	// start position); acked is the highest commit LSN the agent acked. Ack refuses
	// positions beyond emitted, so nothing unemitted is ever confirmed.
	emitted, acked pglogrepl.LSN
}

// New returns an unconfigured connector logging to log (slog.Default when nil).
func New(log *slog.Logger) *Connector {
	if log == nil {
		log = slog.Default()
	}
	return &Connector{log: log.With("connector", "pgcdc")}
}

var (
	_ sdk.Connector = (*Connector)(nil)
	_ sdk.Source    = (*Connector)(nil)
)

// Spec implements sdk.Connector.
func (c *Connector) Spec() sdk.Spec {
	return sdk.Spec{Name: "pgcdc", Version: Version, Source: true,
		Description: "PostgreSQL change data capture (logical replication, pgoutput)"}
}

// Configure implements sdk.Connector: it validates the settings without connecting.
func (c *Connector) Configure(_ context.Context, settings []byte) error {
	cfg, err := parseSettings(settings)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
	return nil
}

// Health implements sdk.Connector: the server is reachable with a replication
// connection and has wal_level=logical.
func (c *Connector) Health(ctx context.Context) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	conn, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return checkWALLevel(ctx, conn)
}

// Close implements sdk.Connector. Read owns its connection and closes it when it
// returns, so there is nothing else to release.
func (c *Connector) Close() error { return nil }

func (c *Connector) config() (*config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg == nil {
		return nil, errors.New("pgcdc: not configured")
	}
	return c.cfg, nil
}

// Ack implements sdk.Source: the batch at position is durable in the agent, so its
// transaction may be confirmed to the server (sent with the next standby status).
func (c *Connector) Ack(_ context.Context, position string) error {
	p, err := ParsePosition(position)
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	lsn := p.LSN
	if p.HasOrdinal && lsn > 0 {
		lsn-- // part of a transaction: the transaction itself is not done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if lsn > c.emitted {
		return fmt.Errorf("ack of %s: beyond the last emitted position %s", position, Position{LSN: c.emitted})
	}
	c.acked = max(c.acked, lsn)
	return nil
}

// connect opens a replication connection (replication=database: it also runs SQL).
func connect(ctx context.Context, cfg *config) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, cfg.conn)
	if err != nil {
		return nil, fmt.Errorf("pgcdc: connect to PostgreSQL at %s:%d (replication): %w", cfg.conn.Host, cfg.conn.Port, err)
	}
	return conn, nil
}

// query runs one simple-protocol statement (the only kind a replication connection
// takes) and returns its rows as text.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, r := range results {
		if r.Err != nil {
			return nil, r.Err
		}
		for _, row := range r.Rows {
			out := make([]string, len(row))
			for i, v := range row {
				out[i] = string(v)
			}
			rows = append(rows, out)
		}
	}
	return rows, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func quoteTable(t tableName) string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

func checkWALLevel(ctx context.Context, conn *pgconn.PgConn) error {
	rows, err := query(ctx, conn, "SELECT current_setting('wal_level')")
	if err != nil {
		return fmt.Errorf("pgcdc: read wal_level: %w", err)
	}
	if len(rows) != 1 || rows[0][0] != "logical" {
		level := "?"
		if len(rows) == 1 {
			level = rows[0][0]
		}
		return sdk.Permanent(fmt.Errorf("pgcdc: %w: the server runs with wal_level=%s; set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", ErrWALLevel, level))
	}
	return nil
}

// preparePublication makes sure the publication exists and covers every configured
// table, creating or extending it when create_publication is set.
func preparePublication(ctx context.Context, conn *pgconn.PgConn, cfg *config, log *slog.Logger) error {
	pub := cfg.Publication
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	if err != nil {
		return fmt.Errorf("pgcdc: look up publication %q: %w", pub, err)
	}
	exists := len(rows) > 0
	var missing []tableName
	if !exists {
		missing = cfg.order
	} else {
		rows, err := query(ctx, conn, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = "+quoteLiteral(pub))
		if err != nil {
			return fmt.Errorf("pgcdc: list the tables of publication %q: %w", pub, err)
		}
		have := map[tableName]bool{}
		for _, r := range rows {
			have[tableName{r[0], r[1]}] = true
		}
		for _, t := range cfg.order {
			if !have[t] {
				missing = append(missing, t)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	quoted := make([]string, len(missing))
	names := make([]string, len(missing))
	for i, t := range missing {
		quoted[i], names[i] = quoteTable(t), t.String()
	}
	list := strings.Join(quoted, ", ")
	var stmt string
	if !exists {
		stmt = fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update, delete')", pgx.Identifier{pub}.Sanitize(), list)
	} else {
		stmt = fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgx.Identifier{pub}.Sanitize(), list)
	}
	if !cfg.CreatePublication {
		what := fmt.Sprintf("publication %q does not exist", pub)
		if exists {
			what = fmt.Sprintf("publication %q does not include %s", pub, strings.Join(names, ", "))
		}
		return sdk.Permanent(fmt.Errorf("pgcdc: %w: %s; run %s; or set create_publication: true", ErrNoPublication, what, stmt))
	}
	// A published table without a replica identity makes PostgreSQL refuse its UPDATEs
	// and DELETEs: never do that to an ERP's table.
	for _, t := range missing {
		if err := checkReplicaIdentity(ctx, conn, t); err != nil {
			return err
		}
	}
	if _, err := query(ctx, conn, stmt); err != nil {
		return fmt.Errorf("pgcdc: %s: %w", stmt, err)
	}
	log.Info("publication ready", "publication", pub, "created", !exists, "added_tables", strings.Join(names, ","))
	return nil
}

func checkReplicaIdentity(ctx context.Context, conn *pgconn.PgConn, t tableName) error {
	rows, err := query(ctx, conn, fmt.Sprintf(`SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s`, quoteLiteral(t.schema), quoteLiteral(t.name)))
	if err != nil {
		return fmt.Errorf("pgcdc: look up table %s: %w", t, err)
	}
	if len(rows) == 0 {
		return sdk.Permanent(fmt.Errorf("pgcdc: table %s does not exist", t))
	}
	ident, hasPK := rows[0][0], rows[0][1] == "t"
	if ident == "n" || (ident == "d" && !hasPK) {
		return sdk.Permanent(fmt.Errorf("pgcdc: table %s has no primary key or replica identity; publishing it would make PostgreSQL refuse its UPDATEs and DELETEs; run ALTER TABLE %s REPLICA IDENTITY FULL (or add a primary key) first", t, quoteTable(t)))
	}
	return nil
}

// prepareSlot makes sure the slot exists, is a pgoutput slot of this database and is not
// in use, and returns its confirmed LSN and whether it was created now. A slot still held by a previous connection (a
// restart right after a crash) is waited for up to slot_busy_timeout.
func prepareSlot(ctx context.Context, conn *pgconn.PgConn, cfg *config, log *slog.Logger) (lsn pglogrepl.LSN, created bool, err error) {
	deadline := time.Now().Add(cfg.slotBusyTimeout)
	for {
		rows, err := query(ctx, conn, `SELECT plugin, slot_type, coalesce(database::text, ''), current_database(),
coalesce(confirmed_flush_lsn::text, ''), coalesce(active_pid::text, '') FROM pg_replication_slots WHERE slot_name = `+quoteLiteral(cfg.Slot))
		if err != nil {
			return 0, false, fmt.Errorf("pgcdc: look up replication slot %q: %w", cfg.Slot, err)
		}
		if len(rows) == 0 {
			if !cfg.CreateSlot {
				return 0, false, sdk.Permanent(fmt.Errorf("pgcdc: %w: slot %q; create it with SELECT pg_create_logical_replication_slot('%s', 'pgoutput'); or set create_slot: true", ErrNoSlot, cfg.Slot, cfg.Slot))
			}
			res, err := pglogrepl.CreateReplicationSlot(ctx, conn, cfg.Slot, "pgoutput",
				pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
			if err != nil {
				return 0, false, fmt.Errorf("pgcdc: create replication slot %q: %w", cfg.Slot, err)
			}
			lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
			if err != nil {
				return 0, false, fmt.Errorf("pgcdc: create replication slot %q: consistent point %q: %w", cfg.Slot, res.ConsistentPoint, err)
			}
			log.Info("replication slot created", "slot", cfg.Slot, "lsn", lsn.String())
			return lsn, true, nil
		}
		r := rows[0]
		plugin, typ, db, curDB, confirmed, pid := r[0], r[1], r[2], r[3], r[4], r[5]
		if typ != "logical" || plugin != "pgoutput" || db != curDB {
			return 0, false, sdk.Permanent(fmt.Errorf("pgcdc: %w: slot %q is a %s slot with plugin %q on database %q; pgcdc needs a logical pgoutput slot on %q (choose another slot name)", ErrSlotMismatch, cfg.Slot, typ, plugin, db, curDB))
		}
		if pid == "" {
			lsn, err := pglogrepl.ParseLSN(confirmed)
			if err != nil {
				return 0, false, fmt.Errorf("pgcdc: slot %q: confirmed_flush_lsn %q: %w", cfg.Slot, confirmed, err)
			}
			log.Info("reusing replication slot", "slot", cfg.Slot, "confirmed_flush_lsn", lsn.String())
			return lsn, false, nil
		}
		if time.Now().After(deadline) {
			return 0, false, fmt.Errorf("pgcdc: replication slot %q is in use by server process %s (another consumer, or a connection that has not ended yet)", cfg.Slot, pid)
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
