package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/plugins/internal/rowmap"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// sink is validated SinkSettings.
type sink struct {
	cfg     *SinkSettings
	d       *dialect
	stmt    namedStatement
	paths   []string // event field path per placeholder
	header  *namedStatement
	hpaths  []string // the header statement's paths
	applied string   // idempotency table
	insert  string   // insert into it
	lookup  string   // read a recorded ref
	setRef  string   // record a ref
}

func newSink(s *SinkSettings, d *dialect) (*sink, error) {
	bad := func(field, format string, args ...any) error {
		return &sdk.ConfigError{Field: "sink." + field, Reason: fmt.Sprintf(format, args...)}
	}
	k := &sink{cfg: s, d: d, applied: s.IdempotencyTable}
	if k.applied == "" {
		k.applied = DefaultAppliedTable
	}
	if !tableRE.MatchString(k.applied) {
		return nil, bad("idempotency_table", "%q is not a table name", k.applied)
	}
	if strings.TrimSpace(s.Statement) == "" {
		return nil, bad("statement", "required: the SQL to run per event, with :name parameters")
	}
	ns, err := parseNamed(s.Statement, d.placeholder, d.placeholder(2) != "?")
	if err != nil {
		return nil, bad("statement", "%v", err)
	}
	k.stmt = ns
	switch s.ForEach {
	case "", "lines":
	default:
		return nil, bad("for_each", "%q: want lines or nothing", s.ForEach)
	}
	for i, typ := range s.Types {
		if rowmap.FieldNames(typ) == nil {
			return nil, bad(fmt.Sprintf("types[%d]", i), "%q is not an event type; one of %s", typ, strings.Join(rowmap.Types(), ", "))
		}
	}
	for _, name := range sortedKeys(s.Params) {
		if !slices.Contains(ns.Args, name) && !headerUses(s.HeaderStatement, d, name) {
			return nil, bad("params."+name, "the statement has no :%s parameter", name)
		}
	}
	for _, name := range ns.Args {
		path := name
		field := "statement"
		if p, ok := s.Params[name]; ok {
			path, field = p, "params."+name
		}
		if err := checkPath(path, s); err != nil {
			return nil, bad(field, ":%s: %v", name, err)
		}
		k.paths = append(k.paths, path)
	}
	if strings.TrimSpace(s.HeaderStatement) != "" {
		if s.ForEach != "lines" {
			return nil, bad("header_statement", "runs once before the line statements: set for_each: lines (or put it all in statement)")
		}
		hs, err := parseNamed(s.HeaderStatement, d.placeholder, d.placeholder(2) != "?")
		if err != nil {
			return nil, bad("header_statement", "%v", err)
		}
		k.header = &hs
		for _, name := range hs.Args {
			path := name
			if p, ok := s.Params[name]; ok {
				path = p
			}
			if strings.HasPrefix(path, "lines.") {
				return nil, bad("header_statement", ":%s reads %s, a line field; the header runs once per event", name, path)
			}
			if err := checkPath(path, s); err != nil {
				return nil, bad("header_statement", ":%s: %v", name, err)
			}
			k.hpaths = append(k.hpaths, path)
		}
	}
	ph := d.placeholder
	k.insert = d.insertApplied(k.applied, ph)
	k.lookup = fmt.Sprintf("SELECT ref FROM %s WHERE event_id = %s", k.applied, ph(1))
	k.setRef = fmt.Sprintf("UPDATE %s SET ref = %s WHERE event_id = %s", k.applied, ph(1), ph(2))
	return k, nil
}

// headerUses says whether the header statement (if it parses) has parameter :name.
func headerUses(header string, d *dialect, name string) bool {
	if strings.TrimSpace(header) == "" {
		return false
	}
	hs, err := parseNamed(header, d.placeholder, d.placeholder(2) != "?")
	return err == nil && slices.Contains(hs.Args, name)
}

// checkPath checks an event field path against the accepted types (any type when
// none are listed).
func checkPath(path string, s *SinkSettings) error {
	switch path {
	case "event_id", "type", "occurred_at":
		return nil
	}
	if k, ok := strings.CutPrefix(path, "keys."); ok {
		if k == "" {
			return fmt.Errorf("keys.<name> needs a name")
		}
		return nil
	}
	if strings.HasPrefix(path, "lines.") && s.ForEach != "lines" {
		return fmt.Errorf("%s is a line field: set for_each: lines", path)
	}
	types := s.Types
	if len(types) == 0 {
		types = rowmap.Types()
	}
	for _, t := range types {
		if slices.Contains(rowmap.FieldNames(t), path) {
			return nil
		}
	}
	return fmt.Errorf("%q is not a field of %s (event_id, type, occurred_at, keys.<name> or a payload field)", path, strings.Join(types, ", "))
}

// prepare creates the idempotency table if told to and checks the statements.
func (k *sink) prepare(ctx context.Context, db *dbsql.DB) error {
	if k.cfg.CreateIdempotencyTable {
		if _, err := db.ExecContext(ctx, k.d.createApplied(k.applied)); err != nil {
			return fmt.Errorf("sql: create %s: %w", k.applied, err)
		}
	}
	checks := []struct{ field, q string }{{"idempotency_table", k.insert}, {"statement", k.stmt.Query}}
	if k.header != nil {
		checks = append(checks, struct{ field, q string }{"header_statement", k.header.Query})
	}
	for _, c := range checks {
		st, err := db.PrepareContext(ctx, c.q)
		if err != nil {
			return &sdk.ConfigError{Field: "sink." + c.field, Reason: fmt.Sprintf("the database refuses it: %v", err)}
		}
		st.Close()
	}
	return nil
}

// Write implements sdk.Sink: each event in its own transaction with its idempotency
// record.
func (c *Connector) Write(ctx context.Context, events []*eventv1.Event) ([]sdk.WriteResult, error) {
	if c.db == nil {
		return nil, errors.New("sql: not configured")
	}
	if c.sink == nil {
		return nil, sdk.Permanent(errors.New("sql: this connector has no sink settings"))
	}
	if err := c.ensureChecked(ctx); err != nil {
		return nil, err
	}
	out := make([]sdk.WriteResult, len(events))
	for i, ev := range events {
		ref, err := c.sink.write(ctx, c.db, ev)
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		out[i] = sdk.WriteResult{EventID: ev.GetId(), Ref: ref, Err: err}
	}
	return out, nil
}

func (k *sink) args(ev *eventv1.Event) ([][]any, error) {
	var lines []protoreflect.Message
	if k.cfg.ForEach == "lines" {
		lines = rowmap.Lines(ev)
		if len(lines) == 0 {
			return nil, fmt.Errorf("for_each lines: the %s event has no lines", ev.GetType())
		}
	} else {
		lines = []protoreflect.Message{nil}
	}
	sets := make([][]any, 0, len(lines))
	for _, l := range lines {
		set := make([]any, len(k.paths))
		for i, p := range k.paths {
			v, err := rowmap.Field(ev, l, p)
			if err != nil {
				return nil, fmt.Errorf(":%s: %w", k.stmt.Args[i], err)
			}
			if v != "" { // an empty field is NULL
				set[i] = v
			}
		}
		sets = append(sets, set)
	}
	return sets, nil
}

func (k *sink) write(ctx context.Context, db *dbsql.DB, ev *eventv1.Event) (string, error) {
	if ev.GetId() == "" {
		return "", sdk.Permanent(errors.New("event has no id"))
	}
	if len(ev.GetId()) > canonical.MaxIDLen {
		return "", sdk.Permanent(fmt.Errorf("event id longer than %d characters", canonical.MaxIDLen))
	}
	if len(k.cfg.Types) > 0 && !slices.Contains(k.cfg.Types, ev.GetType()) {
		return "", sdk.Permanent(fmt.Errorf("this sink takes %s events, not %q", strings.Join(k.cfg.Types, ", "), ev.GetType()))
	}
	sets, err := k.args(ev)
	if err != nil {
		return "", sdk.Permanent(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("sql sink: begin: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, k.insert, ev.GetId(), "")
	if err != nil {
		return "", k.classify("record event id", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return "", fmt.Errorf("sql sink: %w", err)
	} else if n == 0 { // written before: change nothing, answer as then
		tx.Rollback()
		var ref string
		if err := db.QueryRowContext(ctx, k.lookup, ev.GetId()).Scan(&ref); err != nil {
			return "", fmt.Errorf("sql sink: read recorded ref: %w", err)
		}
		return ref, nil
	}
	var ref string
	if k.header != nil {
		hargs := make([]any, len(k.hpaths))
		for i, p := range k.hpaths {
			v, err := rowmap.Field(ev, nil, p)
			if err != nil {
				return "", sdk.Permanent(fmt.Errorf("header_statement :%s: %w", k.header.Args[i], err))
			}
			if v != "" {
				hargs[i] = v
			}
		}
		if k.cfg.ReturnsRef {
			var r dbsql.NullString
			if err := tx.QueryRowContext(ctx, k.header.Query, hargs...).Scan(&r); err != nil {
				if errors.Is(err, dbsql.ErrNoRows) {
					return "", sdk.Permanent(errors.New("sql sink: returns_ref is set but the header statement returned no row"))
				}
				return "", k.classify("header statement", err)
			}
			ref = r.String
		} else if _, err := tx.ExecContext(ctx, k.header.Query, hargs...); err != nil {
			return "", k.classify("header statement", err)
		}
	}
	for _, set := range sets {
		if k.cfg.ReturnsRef && k.header == nil {
			var r dbsql.NullString
			if err := tx.QueryRowContext(ctx, k.stmt.Query, set...).Scan(&r); err != nil {
				if errors.Is(err, dbsql.ErrNoRows) {
					return "", sdk.Permanent(errors.New("sql sink: returns_ref is set but the statement returned no row"))
				}
				return "", k.classify("statement", err)
			}
			if r.String != "" {
				ref = r.String
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, k.stmt.Query, set...); err != nil {
			return "", k.classify("statement", err)
		}
	}
	if ref != "" {
		if _, err := tx.ExecContext(ctx, k.setRef, ref, ev.GetId()); err != nil {
			return "", k.classify("record ref", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return "", k.classify("commit", err)
	}
	return ref, nil
}

func (k *sink) classify(what string, err error) error {
	err = fmt.Errorf("sql sink: %s: %w", what, err)
	if isDataError(err) {
		return sdk.Permanent(err)
	}
	return err
}
