package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/plugins/internal/rowmap"
	"github.com/crossdock/crossdock/plugins/sdk"
)

const (
	modeIncremental = "incremental"
	modeSnapshot    = "snapshot"
	// Aliases of the tracking and key columns as read back for positions.
	trackAlias = "crossdock_track"
	keyAlias   = "crossdock_key"
)

// table is one validated TableSettings.
type table struct {
	name      string
	from      string // table name or "(query)"
	snapshot  bool
	track     string // tracking column (incremental)
	key       string
	delay     time.Duration
	interval  time.Duration
	restart   bool
	batch     int
	failOnBad bool
	mapping   *rowmap.Mapping
	cfg       *TableSettings
}

func newTable(path string, ts *TableSettings, s *Settings) (*table, error) {
	bad := func(field, format string, args ...any) error {
		return &sdk.ConfigError{Field: path + "." + field, Reason: fmt.Sprintf(format, args...)}
	}
	t := &table{cfg: ts, batch: s.BatchSize, key: ts.KeyColumn, delay: time.Duration(ts.Delay),
		interval: time.Duration(ts.Interval), restart: ts.RestartUnfinished}
	switch {
	case ts.Table != "" && ts.Query != "":
		return nil, bad("query", "set table or query, not both")
	case ts.Table != "":
		if !tableRE.MatchString(ts.Table) {
			return nil, bad("table", "%q is not a table name (letters, digits, _ and $, optionally schema.table)", ts.Table)
		}
		t.from = ts.Table
		t.name = ts.Table
	case ts.Query != "":
		q := strings.TrimRight(strings.TrimSpace(ts.Query), ";")
		if !strings.EqualFold(firstWord(q), "select") && !strings.EqualFold(firstWord(q), "with") {
			return nil, bad("query", "must be a SELECT")
		}
		t.from = "(" + q + ")"
	default:
		return nil, bad("table", "required: a table name, or a query")
	}
	if ts.Name != "" {
		t.name = ts.Name
	}
	if t.name == "" {
		return nil, bad("name", "required with a query (it names the query in positions)")
	}
	if strings.ContainsAny(t.name, "|\x00") {
		return nil, bad("name", "must not contain | or NUL")
	}
	if !columnRE.MatchString(ts.KeyColumn) {
		return nil, bad("key_column", "required: a unique column to order rows by (a column name)")
	}
	if ts.BatchSize != 0 {
		if ts.BatchSize < 1 || ts.BatchSize > MaxBatchSize {
			return nil, bad("batch_size", "must be 1 to %d", MaxBatchSize)
		}
		t.batch = ts.BatchSize
	}
	switch ts.OnBadRow {
	case "", "skip":
	case "fail":
		t.failOnBad = true
	default:
		return nil, bad("on_bad_row", "%q: want skip or fail", ts.OnBadRow)
	}
	switch ts.Mode {
	case "", modeIncremental:
		switch {
		case ts.TimestampColumn != "" && ts.VersionColumn != "":
			return nil, bad("version_column", "set timestamp_column or version_column, not both")
		case ts.TimestampColumn != "":
			t.track = ts.TimestampColumn
		case ts.VersionColumn != "":
			t.track = ts.VersionColumn
			if ts.Delay != 0 {
				return nil, bad("delay", "applies to timestamp_column only")
			}
		default:
			return nil, bad("timestamp_column", "incremental mode needs timestamp_column or version_column")
		}
		if !columnRE.MatchString(t.track) {
			return nil, bad(map[bool]string{true: "timestamp_column", false: "version_column"}[ts.TimestampColumn != ""], "%q is not a column name", t.track)
		}
		if ts.Interval != 0 {
			return nil, bad("interval", "applies to snapshot mode; incremental tables poll every poll_interval")
		}
	case modeSnapshot:
		t.snapshot = true
		if ts.TimestampColumn != "" || ts.VersionColumn != "" || ts.Delay != 0 {
			return nil, bad("mode", "snapshot reads the whole table; timestamp_column, version_column and delay apply to incremental mode")
		}
		if t.interval == 0 {
			t.interval = DefaultSnapshotInterval
		}
	default:
		return nil, bad("mode", "%q: want incremental or snapshot", ts.Mode)
	}
	mc := ts.Mapping
	if mc.OccurredAt == "" && ts.TimestampColumn != "" {
		mc.OccurredAt = ts.TimestampColumn
	}
	m, err := rowmap.New(path+".mapping", mc)
	if err != nil {
		return nil, err
	}
	t.mapping = m
	return t, nil
}

func firstWord(s string) string {
	s = strings.TrimLeft(s, " \t\r\n(")
	if i := strings.IndexAny(s, " \t\r\n("); i >= 0 {
		return s[:i]
	}
	return s
}

// checkColumns checks that the columns the settings name exist.
func (t *table) checkColumns(ctx context.Context, db *dbsql.DB, path string) error {
	rows, err := db.QueryContext(ctx, "SELECT * FROM "+t.from+" crossdock_src WHERE 1=0")
	if err != nil {
		field := path + ".table"
		if t.cfg.Query != "" {
			field = path + ".query"
		}
		return &sdk.ConfigError{Field: field, Reason: fmt.Sprintf("cannot read it: %v", err)}
	}
	cols, err := rows.Columns()
	rows.Close()
	if err != nil {
		return fmt.Errorf("sql: %s: columns: %w", t.name, err)
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	check := func(field, col string) error {
		if col == "" || have[col] {
			return nil
		}
		return &sdk.ConfigError{Field: path + "." + field, Reason: fmt.Sprintf("column %q is not in %s (columns: %s)", col, t.name, strings.Join(cols, ", "))}
	}
	mc := t.cfg.Mapping
	checks := [][2]string{{"key_column", t.key}, {"timestamp_column", t.cfg.TimestampColumn},
		{"version_column", t.cfg.VersionColumn}, {"mapping.occurred_at", mc.OccurredAt}}
	for _, k := range sortedKeys(mc.Fields) {
		checks = append(checks, [2]string{"mapping.fields." + k, mc.Fields[k]})
	}
	for _, k := range sortedKeys(mc.Keys) {
		checks = append(checks, [2]string{"mapping.keys." + k, mc.Keys[k]})
	}
	for _, c := range checks {
		if err := check(c[0], c[1]); err != nil {
			return err
		}
	}
	return nil
}

// Read implements sdk.Source. Tables are polled in turn, one batch each; a table whose
// last batch was full is polled again at once, the others after poll_interval (or, in
// snapshot mode, when the next run is due).
func (c *Connector) Read(ctx context.Context, from string, emit sdk.Emit) error {
	if c.db == nil {
		return errors.New("sql: not configured")
	}
	if len(c.tables) == 0 {
		<-ctx.Done() // a sink-only connector has nothing to read
		return nil
	}
	pos, err := ParsePosition(from)
	if err != nil {
		return err
	}
	if err := c.ensureChecked(ctx); err != nil {
		return err
	}
	due := make([]time.Time, len(c.tables))
	for i, t := range c.tables {
		st := pos.Tables[t.name]
		switch {
		case t.snapshot && st.Run == "" && !st.TS.IsZero():
			c.log.Warn("sql: table switched to snapshot mode; starting a snapshot", "table", t.name)
			st = TableState{}
		case !t.snapshot && st.Run != "":
			c.log.Warn("sql: table switched to incremental mode; reading from the beginning", "table", t.name)
			st = TableState{}
		case t.snapshot && st.Run != "" && !st.Done && t.restart:
			c.log.Info("sql: starting the unfinished snapshot over", "table", t.name, "run", st.Run)
			st = TableState{}
		case t.snapshot && st.Done:
			run, _ := time.Parse(time.RFC3339Nano, st.Run)
			due[i] = run.Add(t.interval)
		}
		pos.Tables[t.name] = st
	}
	for name := range pos.Tables {
		if !c.hasTable(name) {
			delete(pos.Tables, name) // a table no longer configured
		}
	}
	poll := time.Duration(c.settings.PollInterval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		next := now.Add(poll)
		for i, t := range c.tables {
			if now.Before(due[i]) {
				next = minTime(next, due[i])
				continue
			}
			var full bool
			var err error
			if t.snapshot {
				full, err = c.pollSnapshot(ctx, t, &pos, emit)
			} else {
				full, err = c.pollIncremental(ctx, t, &pos, emit)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			switch {
			case full:
				due[i] = time.Time{}
			case t.snapshot:
				run, _ := time.Parse(time.RFC3339Nano, pos.Tables[t.name].Run)
				due[i] = run.Add(t.interval)
			default:
				due[i] = now.Add(poll)
			}
			next = minTime(next, due[i])
		}
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *Connector) hasTable(name string) bool {
	for _, t := range c.tables {
		if t.name == name {
			return true
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// pollIncremental reads one batch after the table's position and emits it. It reports
// whether the batch was full (more rows may be waiting).
func (c *Connector) pollIncremental(ctx context.Context, t *table, pos *Position, emit sdk.Emit) (bool, error) {
	st := pos.Tables[t.name]
	col := func(name string) string { return "crossdock_src." + name }
	conds := []string{col(t.track) + " IS NOT NULL", col(t.key) + " IS NOT NULL"}
	var args []any
	if t.delay > 0 {
		conds = append(conds, c.d.olderThan(col(t.track), t.delay))
	}
	if !st.TS.IsZero() {
		// ts > :ts OR (ts = :ts AND key > :key), written so that the leading
		// ts >= :ts is a range an index on (ts, key) serves in ORDER BY order: the
		// database reads from the position on instead of every newer row.
		ts, key := c.d.placeholder(1), c.d.placeholder(2)
		args = append(args, st.TS.Arg(), st.Key.Arg())
		if c.d.placeholder(1) == "?" {
			ts, key = "?", "?"
			args = []any{st.TS.Arg(), st.TS.Arg(), st.Key.Arg()} // ts, ts, key
		}
		conds = append(conds, fmt.Sprintf("%s >= %s AND (%s > %s OR %s > %s)", col(t.track), ts, col(t.track), ts, col(t.key), key))
	}
	q := fmt.Sprintf("SELECT crossdock_src.*, %s AS %s, %s AS %s FROM %s crossdock_src WHERE %s ORDER BY %s, %s LIMIT %d",
		c.d.trackExpr(col(t.track)), trackAlias, c.d.trackExpr(col(t.key)), keyAlias, t.from,
		strings.Join(conds, " AND "), col(t.track), col(t.key), t.batch)
	n := 0
	var b sdk.Batch
	err := c.query(ctx, q, args, func(row map[string]any) error {
		n++
		tv, err := ValueOf(row[trackAlias])
		if err != nil {
			return fmt.Errorf("sql: %s: %s: %w", t.name, t.track, err)
		}
		kv, err := ValueOf(row[keyAlias])
		if err != nil {
			return fmt.Errorf("sql: %s: %s: %w", t.name, t.key, err)
		}
		st = TableState{TS: tv, Key: kv}
		ev, err := t.mapping.Build(row)
		if err != nil {
			return t.badRow(c, kv, err)
		}
		b.Events = append(b.Events, ev)
		b.EventPositions = append(b.EventPositions, t.name+"|"+tv.String()+"|"+kv.String())
		return nil
	})
	if err != nil {
		return false, err
	}
	pos.Tables[t.name] = st
	if len(b.Events) > 0 {
		b.Position = pos.String()
		if err := emit(ctx, b); err != nil {
			return false, fmt.Errorf("sql: emit: %w", err)
		}
	}
	return n == t.batch, nil
}

// pollSnapshot reads the next batch of the current snapshot run (starting a run when
// none is in progress) and emits it.
func (c *Connector) pollSnapshot(ctx context.Context, t *table, pos *Position, emit sdk.Emit) (bool, error) {
	st := pos.Tables[t.name]
	if st.Run == "" || st.Done {
		st = TableState{Run: time.Now().UTC().Format(time.RFC3339Nano)}
	}
	run, _ := time.Parse(time.RFC3339Nano, st.Run)
	key := "crossdock_src." + t.key
	where := key + " IS NOT NULL"
	var args []any
	if !st.Key.IsZero() {
		where += " AND " + key + " > " + c.d.placeholder(1)
		args = append(args, st.Key.Arg())
	}
	q := fmt.Sprintf("SELECT crossdock_src.*, %s AS %s FROM %s crossdock_src WHERE %s ORDER BY %s LIMIT %d",
		c.d.trackExpr(key), keyAlias, t.from, where, key, t.batch)
	n := 0
	var b sdk.Batch
	err := c.query(ctx, q, args, func(row map[string]any) error {
		n++
		kv, err := ValueOf(row[keyAlias])
		if err != nil {
			return fmt.Errorf("sql: %s: %s: %w", t.name, t.key, err)
		}
		st.Key = kv
		ev, err := t.mapping.Build(row)
		if err != nil {
			return t.badRow(c, kv, err)
		}
		if ev.OccurredAt == nil {
			ev.OccurredAt = timestamppb.New(run)
		}
		b.Events = append(b.Events, ev)
		b.EventPositions = append(b.EventPositions, t.name+"|snapshot "+st.Run+"|"+kv.String())
		return nil
	})
	if err != nil {
		return false, err
	}
	full := n == t.batch
	st.Done = !full
	pos.Tables[t.name] = st
	if len(b.Events) > 0 {
		b.Position = pos.String()
		if err := emit(ctx, b); err != nil {
			return false, fmt.Errorf("sql: emit: %w", err)
		}
	}
	if st.Done {
		c.log.Info("sql: snapshot run finished", "table", t.name, "run", st.Run)
	}
	return full, nil
}

func (t *table) badRow(c *Connector, key Value, err error) error {
	if t.failOnBad {
		return fmt.Errorf("sql: %s: row %s=%s: %w", t.name, t.key, key.Raw, err)
	}
	c.log.Error("sql: row skipped: it does not map to a valid event", "table", t.name, "key", key.Raw, "err", err)
	return nil
}

// query runs q and calls fn with each row as column → value.
func (c *Connector) query(ctx context.Context, q string, args []any, fn func(map[string]any) error) error {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sql: query: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("sql: columns: %w", err)
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("sql: scan: %w", err)
		}
		row := make(map[string]any, len(cols))
		for i, name := range cols {
			row[name] = vals[i]
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sql: rows: %w", err)
	}
	return nil
}
