package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Read implements sdk.Source. It starts replication after from (or at the slot's
// confirmed LSN when from is empty) and returns nil when ctx ends, after telling the
// server the last acked position.
func (c *Connector) Read(ctx context.Context, from string, emit sdk.Emit) (err error) {
	defer func() {
		if ctx.Err() != nil {
			err = nil // stopped, not failed
		}
	}()
	cfg, err := c.config()
	if err != nil {
		return err
	}
	var start Position
	if from != "" {
		if start, err = ParsePosition(from); err != nil {
			return sdk.Permanent(fmt.Errorf("pgcdc: start position: %w", err))
		}
	}
	c.mu.Lock()
	if c.reading {
		c.mu.Unlock()
		return errors.New("pgcdc: Read is already running")
	}
	c.reading = true
	// from is committed in the agent by contract: it counts as emitted and acked.
	done := start.LSN
	if start.HasOrdinal && done > 0 {
		done--
	}
	c.emitted, c.acked = done, done
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.reading = false
		c.mu.Unlock()
	}()

	conn, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if err := checkWALLevel(ctx, conn); err != nil {
		return err
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("pgcdc: identify system: %w", err)
	}
	if start.LSN > sys.XLogPos {
		return sdk.Permanent(fmt.Errorf("pgcdc: start position %s is ahead of the server's WAL (%s): the database was restored or replaced; reset the connector's position", start, sys.XLogPos))
	}
	if err := preparePublication(ctx, conn, cfg, c.log); err != nil {
		return err
	}
	slotLSN, created, err := prepareSlot(ctx, conn, cfg, c.log)
	if err != nil {
		return err
	}
	switch {
	case created && from != "":
		c.log.Warn("the slot was missing and has been created, but capture had a position: changes between the two were not captured; reload the tables (sql connector snapshot) if they matter",
			"slot", cfg.Slot, "from", from, "slot_lsn", slotLSN.String())
	case from != "" && start.LSN < slotLSN:
		// Normal: keepalives moved the slot past WAL with nothing to capture.
		c.log.Info("slot is ahead of the start position; starting at the slot", "from", from, "confirmed_flush_lsn", slotLSN.String())
	}
	args := []string{"proto_version '1'", "publication_names '" + cfg.Publication + "'"}
	if err := pglogrepl.StartReplication(ctx, conn, cfg.Slot, start.LSN,
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		return fmt.Errorf("pgcdc: start replication on slot %q: %w", cfg.Slot, err)
	}
	c.log.Info("replication started", "slot", cfg.Slot, "publication", cfg.Publication, "from", from, "slot_lsn", slotLSN.String())
	s := &stream{c: c, cfg: cfg, conn: conn, start: start, log: c.log,
		confirmed: max(slotLSN, done), received: max(slotLSN, done),
		relations: map[uint32]*relation{}}
	err = s.run(ctx, emit)
	if ctx.Err() != nil {
		// Stopping: confirm what was acked, best effort, so a restart re-decodes little.
		if serr := s.sendStatus(false); serr != nil {
			c.log.Debug("final standby status", "err", serr)
		}
	}
	return err
}

// stream is one replication session.
type stream struct {
	c     *Connector
	cfg   *config
	conn  *pgconn.PgConn
	log   *slog.Logger
	start Position

	// sendMu serialises writes to conn: standby status updates are also sent while the
	// loop is blocked in emit.
	sendMu sync.Mutex
	// received is the highest WAL position seen (reported as written); confirmed is the
	// position the slot may forget up to (reported as flushed), beyond acks only through
	// keepalives or empty transactions while nothing emitted is unacked.
	received, confirmed pglogrepl.LSN

	relations map[uint32]*relation
	txn       *txn
}

type relation struct {
	msg   *pglogrepl.RelationMessage
	table *table // nil: not configured, changes ignored
}

type txn struct {
	begin  *pglogrepl.BeginMessage
	events []*eventv1.Event
}

func (s *stream) run(ctx context.Context, emit sdk.Emit) error {
	nextStatus := time.Now()
	for {
		if !time.Now().Before(nextStatus) {
			if err := s.sendStatus(false); err != nil {
				return err
			}
			nextStatus = time.Now().Add(s.cfg.statusInterval)
		}
		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := s.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("pgcdc: receive from PostgreSQL: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("pgcdc: replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("pgcdc: keepalive: %w", err)
				}
				s.caughtUp(ka.ServerWALEnd)
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("pgcdc: XLogData: %w", err)
				}
				s.received = max(s.received, xld.WALStart)
				if err := s.handle(ctx, xld, emit); err != nil {
					return err
				}
			}
		case *pgproto3.CopyDone:
			return errors.New("pgcdc: the server ended the replication stream")
		}
	}
}

// caughtUp is called when the server has sent everything up to walEnd: with no
// transaction open and every emitted batch acked, nothing before walEnd is owed to the
// agent, so the slot may confirm it.
func (s *stream) caughtUp(walEnd pglogrepl.LSN) {
	s.received = max(s.received, walEnd)
	if s.txn != nil {
		return
	}
	s.c.mu.Lock()
	idle := s.c.acked >= s.c.emitted
	s.c.mu.Unlock()
	if idle {
		s.confirmed = max(s.confirmed, walEnd)
	}
}

// sendStatus reports the written (received) and flushed (confirmed) positions.
func (s *stream) sendStatus(replyRequested bool) error {
	s.c.mu.Lock()
	flush := max(s.confirmed, s.c.acked)
	s.c.mu.Unlock()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(s.received, flush), WALFlushPosition: flush, WALApplyPosition: flush,
		ReplyRequested: replyRequested})
	if err != nil {
		return fmt.Errorf("pgcdc: send standby status: %w", err)
	}
	return nil
}

func (s *stream) handle(ctx context.Context, xld pglogrepl.XLogData, emit sdk.Emit) error {
	m, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("pgcdc: decode pgoutput message at %s: %w", xld.WALStart, err)
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		return s.relation(m)
	case *pglogrepl.BeginMessage:
		s.txn = &txn{begin: m}
	case *pglogrepl.InsertMessage:
		return s.change(m.RelationID, "insert", nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return s.change(m.RelationID, "update", m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return s.change(m.RelationID, "delete", m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if r := s.relations[id]; r != nil && r.table != nil {
				s.log.Warn("table truncated: no events emitted for its rows", "table", r.table.name.String())
			}
		}
	case *pglogrepl.CommitMessage:
		return s.commit(ctx, m, emit)
	}
	return nil
}

func (s *stream) relation(m *pglogrepl.RelationMessage) error {
	t := s.cfg.tables[tableName{m.Namespace, m.RelationName}]
	s.relations[m.RelationID] = &relation{msg: m, table: t}
	if t == nil {
		return nil
	}
	cols := map[string]*pglogrepl.RelationMessageColumn{}
	for _, col := range m.Columns {
		cols[col.Name] = col
	}
	for _, name := range t.mapping.Columns() {
		if cols[name] == nil {
			return sdk.Permanent(fmt.Errorf("pgcdc: %s.mapping: column %q is not in table %s", t.path, name, t.name))
		}
	}
	if t.onDelete == deleteZero && m.ReplicaIdentity != 'f' {
		for _, name := range t.keyColumns {
			if cols[name].Flags&1 == 0 {
				return sdk.Permanent(fmt.Errorf("pgcdc: %s.on_delete: zero needs column %q in the replica identity of %s so deleted rows carry it; run ALTER TABLE %s REPLICA IDENTITY FULL, or use on_delete: skip", t.path, name, t.name, quoteTable(t.name)))
			}
		}
	}
	return nil
}

// change maps one row change into events of the open transaction. A row the mapping
// cannot turn into a valid event is logged and skipped: one bad row must not stop
// capture of every row after it.
func (s *stream) change(relID uint32, op string, oldTup, newTup *pglogrepl.TupleData) error {
	r := s.relations[relID]
	if r == nil {
		return fmt.Errorf("pgcdc: %s for unknown relation %d (no Relation message first)", op, relID)
	}
	if r.table == nil {
		return nil
	}
	if s.txn == nil {
		return fmt.Errorf("pgcdc: %s on %s outside a transaction", op, r.table.name)
	}
	t := r.table
	var oldRow, newRow map[string]any
	var err error
	if oldTup != nil {
		if oldRow, err = tupleRow(r.msg, oldTup, nil); err != nil {
			return err
		}
	}
	if newTup != nil {
		if newRow, err = tupleRow(r.msg, newTup, oldRow); err != nil {
			return err
		}
	}
	build := func(row map[string]any, what string) {
		ev, err := t.mapping.Build(row)
		if err != nil {
			var hint []any
			for _, col := range t.mapping.Columns() {
				if _, ok := row[col]; !ok {
					hint = []any{"hint", fmt.Sprintf("column %q holds a large (TOASTed) value the server does not resend when it is unchanged; run ALTER TABLE %s REPLICA IDENTITY FULL", col, quoteTable(t.name))}
					break
				}
			}
			s.log.Error("row skipped: cannot map it to an event", append([]any{"table", t.name.String(), "op", what,
				"commit_lsn", s.txn.begin.FinalLSN.String(), "err", err}, hint...)...)
			return
		}
		if ev.OccurredAt == nil {
			ev.OccurredAt = timestamppb.New(s.txn.begin.CommitTime)
		}
		s.txn.events = append(s.txn.events, ev)
	}
	switch op {
	case "insert":
		build(newRow, op)
	case "update":
		// A changed SKU or location leaves the old one without stock.
		if t.onDelete == deleteZero && oldRow != nil && keysChanged(t, oldRow, newRow) {
			build(zeroRow(t, oldRow), "update (old key)")
		}
		build(newRow, op)
	case "delete":
		if t.onDelete == deleteZero && oldRow != nil {
			build(zeroRow(t, oldRow), op)
			return nil
		}
		s.log.Debug("delete skipped (on_delete: skip)", "table", t.name.String(), "commit_lsn", s.txn.begin.FinalLSN.String())
	}
	return nil
}

// tupleRow turns a tuple into column → text value (nil for NULL). An unchanged TOASTed
// value (not sent by the server) is taken from old when it has it, else left out.
func tupleRow(rel *pglogrepl.RelationMessage, tup *pglogrepl.TupleData, old map[string]any) (map[string]any, error) {
	if len(tup.Columns) != len(rel.Columns) {
		return nil, fmt.Errorf("pgcdc: %s.%s: row has %d columns, relation has %d", rel.Namespace, rel.RelationName, len(tup.Columns), len(rel.Columns))
	}
	row := make(map[string]any, len(tup.Columns))
	for i, col := range tup.Columns {
		name := rel.Columns[i].Name
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[name] = nil
		case pglogrepl.TupleDataTypeText:
			row[name] = string(col.Data)
		case pglogrepl.TupleDataTypeBinary:
			return nil, fmt.Errorf("pgcdc: %s.%s.%s: binary value in a text-mode stream", rel.Namespace, rel.RelationName, name)
		case pglogrepl.TupleDataTypeToast:
			if v, ok := old[name]; ok {
				row[name] = v
			}
		}
	}
	return row, nil
}

func keysChanged(t *table, oldRow, newRow map[string]any) bool {
	for _, col := range t.keyColumns {
		if oldRow[col] != newRow[col] {
			return true
		}
	}
	return false
}

// zeroRow is a deleted inventory row as a level of zero: its key columns as they were,
// its quantity columns "0".
func zeroRow(t *table, row map[string]any) map[string]any {
	out := make(map[string]any, len(row))
	for k, v := range row {
		out[k] = v
	}
	for _, col := range t.zeroColumns {
		out[col] = "0"
	}
	return out
}

// commit emits the transaction's events as one batch, skipping those the agent already
// has (at or below the start position). Transactions without events only let the slot
// move on, as keepalives do.
func (s *stream) commit(ctx context.Context, m *pglogrepl.CommitMessage, emit sdk.Emit) error {
	t := s.txn
	s.txn = nil
	if t == nil {
		return errors.New("pgcdc: commit without begin")
	}
	s.received = max(s.received, m.TransactionEndLSN)
	b := sdk.Batch{Position: Position{LSN: m.CommitLSN}.String()}
	for i, ev := range t.events {
		if s.start.Covers(m.CommitLSN, uint64(i)) {
			continue
		}
		b.Events = append(b.Events, ev)
		b.EventPositions = append(b.EventPositions, Position{LSN: m.CommitLSN, Ordinal: uint64(i), HasOrdinal: true}.String())
	}
	if len(b.Events) == 0 {
		s.caughtUp(m.TransactionEndLSN) // nothing the agent does not already have
		return nil
	}
	s.c.mu.Lock()
	s.c.emitted = max(s.c.emitted, m.CommitLSN)
	s.c.mu.Unlock()
	// The agent may block emit (back-pressure); keep answering the server meanwhile, or
	// it drops the connection after wal_sender_timeout.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(s.cfg.statusInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := s.sendStatus(false); err != nil {
					s.log.Warn("standby status during emit", "err", err)
				}
			}
		}
	}()
	err := emit(ctx, b)
	close(stop)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("pgcdc: emit transaction %s: %w", b.Position, err)
	}
	return nil
}
