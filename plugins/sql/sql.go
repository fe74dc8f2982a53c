// Package sql is the "sql" connector: it captures rows from PostgreSQL, MariaDB/MySQL or
// SQLite tables and queries as canonical events, and writes events into a database by
// running a configured statement.
//
// Source modes, per table or query:
//
//   - incremental: rows changed since the last position, by an updated-at timestamp or
//     an integer row-version column plus a unique key column, read with
//     WHERE ts > :ts OR (ts = :ts AND key > :key) ORDER BY ts, key LIMIT :batch
//     (the Kafka Connect JDBC pattern), so any number of rows sharing a timestamp is
//     read exactly once however the batches fall. An optional delay leaves rows younger
//     than it for a later poll, so a transaction that commits late with an older
//     timestamp is still seen (at the cost of that much latency).
//   - snapshot: every interval, the whole table in key order, in batches; the position
//     remembers the run and the last key, so a restart continues the run.
//
// The sink runs a statement with :name parameters bound from event fields, in one
// transaction with an insert into an idempotency table (event_id primary key), so a
// second write of the same event changes nothing.
package sql

import (
	"bytes"
	"context"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/crossdock/crossdock/plugins/internal/rowmap"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// Defaults for settings left out.
const (
	DefaultPollInterval     = 5 * time.Second
	DefaultBatchSize        = 500
	DefaultSnapshotInterval = time.Hour
	DefaultAppliedTable     = "crossdock_applied"
	MaxBatchSize            = 100_000
)

// Settings are the connector's settings (JSON; YAML in the agent config file).
type Settings struct {
	// Driver is postgres, mysql, mariadb or sqlite.
	Driver string `json:"driver"`
	// DSN is the driver's data source name (a secret: the agent resolves it).
	DSN string `json:"dsn"`
	// PollInterval is how often a caught-up incremental table is queried again.
	PollInterval Duration `json:"poll_interval,omitzero"`
	// BatchSize is the most rows per query and per emitted batch.
	BatchSize int `json:"batch_size,omitempty"`
	// Tables are what the source captures.
	Tables []TableSettings `json:"tables,omitempty"`
	// Sink, when set, makes the connector a sink.
	Sink *SinkSettings `json:"sink,omitempty"`
}

// TableSettings are one captured table or query.
type TableSettings struct {
	// Name identifies the table in positions and event ids; default: Table. Renaming
	// it restarts capture of that table from the beginning.
	Name string `json:"name,omitempty"`
	// Table ("schema.table") or Query (a SELECT, used as a subquery) is the source.
	Table string `json:"table,omitempty"`
	Query string `json:"query,omitempty"`
	// Mode is incremental (default) or snapshot.
	Mode string `json:"mode,omitempty"`
	// TimestampColumn or VersionColumn is the tracking column in incremental mode.
	TimestampColumn string `json:"timestamp_column,omitempty"`
	VersionColumn   string `json:"version_column,omitempty"`
	// KeyColumn is unique (with the tracking column) and orders rows.
	KeyColumn string `json:"key_column"`
	// Delay leaves rows whose timestamp is younger than this (by the database's
	// clock) for a later poll. Timestamp mode only.
	Delay Duration `json:"delay,omitzero"`
	// Interval is the time between snapshot runs (snapshot mode).
	Interval Duration `json:"interval,omitzero"`
	// RestartUnfinished starts an unfinished snapshot run over after a restart instead
	// of continuing it.
	RestartUnfinished bool `json:"restart_unfinished,omitempty"`
	// BatchSize overrides the connector's batch size for this table.
	BatchSize int `json:"batch_size,omitempty"`
	// OnBadRow is skip (default: log it and go on) or fail (stop capture).
	OnBadRow string `json:"on_bad_row,omitempty"`
	// Mapping turns a row into a canonical event.
	Mapping rowmap.Config `json:"mapping"`
}

// SinkSettings configure writes.
type SinkSettings struct {
	// Statement is run per event (or per line with ForEach), with :name parameters.
	Statement string `json:"statement"`
	// Params maps a parameter name to an event field path: event_id, type,
	// occurred_at, keys.<name>, a payload field (sku, on_hand) or lines.<field>. A
	// parameter not listed reads the field of its own name.
	Params map[string]string `json:"params,omitempty"`
	// ForEach "lines" runs the statement once per order/shipment/return line.
	ForEach string `json:"for_each,omitempty"`
	// Types limits the event types accepted; others fail permanently.
	Types []string `json:"types,omitempty"`
	// HeaderStatement, with ForEach "lines", runs once per event before the per-line
	// statements, in the same transaction: an order header into one staging table, its
	// lines into another. Its parameters read event and payload fields (not lines.*).
	HeaderStatement string `json:"header_statement,omitempty"`
	// ReturnsRef: the statement (the header statement when there is one) returns a row
	// whose first column is the target's reference (e.g. the ERP order number), reported
	// back and kept for duplicates.
	ReturnsRef bool `json:"returns_ref,omitempty"`
	// IdempotencyTable records applied event ids; default crossdock_applied.
	IdempotencyTable string `json:"idempotency_table,omitempty"`
	// CreateIdempotencyTable creates it when missing.
	CreateIdempotencyTable bool `json:"create_idempotency_table,omitempty"`
}

// Duration is a time.Duration written as "5s", "1m30s".
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration such as \"5s\"", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

var (
	tableRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)
	columnRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)
)

// Connector is the sql connector. Create it with New.
type Connector struct {
	log      *slog.Logger
	settings Settings
	d        *dialect
	db       *dbsql.DB
	tables   []*table
	sink     *sink

	mu      sync.Mutex
	checked bool // checkDB passed
}

var (
	_ sdk.Connector = (*Connector)(nil)
	_ sdk.Source    = (*Connector)(nil)
	_ sdk.Sink      = (*Connector)(nil)
)

// New returns an unconfigured connector logging to log (nil: slog.Default()).
func New(log *slog.Logger) *Connector {
	if log == nil {
		log = slog.Default()
	}
	return &Connector{log: log}
}

// Spec implements sdk.Connector.
func (c *Connector) Spec() sdk.Spec {
	return sdk.Spec{Name: "sql", Version: "1.0.0", Source: true, Sink: true,
		Description: "PostgreSQL, MariaDB/MySQL and SQLite: incremental and snapshot capture, SQL statement sink"}
}

// Configure implements sdk.Connector: it validates settings (errors name the field),
// opens the database and, when it is reachable, checks the columns and statements.
func (c *Connector) Configure(ctx context.Context, raw []byte) error {
	if c.db != nil {
		return errors.New("sql: already configured")
	}
	var s Settings
	if err := decodeSettings(raw, &s); err != nil {
		return err
	}
	if err := c.validate(&s); err != nil {
		return err
	}
	db, err := dbsql.Open(c.d.driverName, s.DSN)
	if err != nil {
		return &sdk.ConfigError{Field: "dsn", Reason: err.Error()}
	}
	c.db = db
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(cctx); err != nil {
		// Not a settings error: the database may come up later; Read and Write check
		// again before they start.
		c.log.Warn("sql: database not reachable at configure; checking later", "driver", s.Driver, "err", err)
		return nil
	}
	if err := c.ensureChecked(cctx); err != nil {
		db.Close()
		c.db = nil
		return err
	}
	return nil
}

// ensureChecked runs checkDB once it succeeds; Configure does when the database is
// reachable, Read and Write otherwise.
func (c *Connector) ensureChecked(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checked {
		return nil
	}
	if err := c.checkDB(ctx); err != nil {
		var ce *sdk.ConfigError
		if errors.As(err, &ce) {
			return err
		}
		return fmt.Errorf("sql: %w", err)
	}
	c.checked = true
	return nil
}

func (c *Connector) validate(s *Settings) error {
	bad := func(field, format string, args ...any) error {
		return &sdk.ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	d, ok := dialects[strings.ToLower(s.Driver)]
	if !ok {
		return bad("driver", "%q is not supported; one of %s", s.Driver, driverNames())
	}
	c.d = d
	if strings.TrimSpace(s.DSN) == "" {
		return bad("dsn", "required")
	}
	if s.PollInterval == 0 {
		s.PollInterval = Duration(DefaultPollInterval)
	}
	if s.BatchSize == 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.BatchSize < 1 || s.BatchSize > MaxBatchSize {
		return bad("batch_size", "must be 1 to %d", MaxBatchSize)
	}
	if len(s.Tables) == 0 && s.Sink == nil {
		return bad("tables", "nothing to do: list tables to capture or configure a sink")
	}
	names := map[string]int{}
	for i := range s.Tables {
		t, err := newTable(fmt.Sprintf("tables[%d]", i), &s.Tables[i], s)
		if err != nil {
			return err
		}
		if j, dup := names[t.name]; dup {
			return bad(fmt.Sprintf("tables[%d].name", i), "%q is also the name of tables[%d]", t.name, j)
		}
		names[t.name] = i
		c.tables = append(c.tables, t)
	}
	if s.Sink != nil {
		k, err := newSink(s.Sink, d)
		if err != nil {
			return err
		}
		c.sink = k
	}
	c.settings = *s
	return nil
}

// checkDB checks against the live database what settings alone cannot: the columns the
// tables and mappings name, and the sink's statements.
func (c *Connector) checkDB(ctx context.Context) error {
	for i, t := range c.tables {
		if err := t.checkColumns(ctx, c.db, fmt.Sprintf("tables[%d]", i)); err != nil {
			return err
		}
	}
	if c.sink != nil {
		if err := c.sink.prepare(ctx, c.db); err != nil {
			return err
		}
	}
	return nil
}

// Health implements sdk.Connector.
func (c *Connector) Health(ctx context.Context) error {
	if c.db == nil {
		return errors.New("sql: not configured")
	}
	if err := c.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sql: %s: %w", c.d.name, err)
	}
	return nil
}

// Close implements sdk.Connector.
func (c *Connector) Close() error {
	if c.db == nil {
		return nil
	}
	return c.db.Close()
}

// Ack implements sdk.Source: nothing upstream needs to know.
func (c *Connector) Ack(context.Context, string) error { return nil }

// decodeSettings decodes JSON settings, turning decoding errors into *sdk.ConfigError
// with the field's path.
func decodeSettings(raw []byte, s *Settings) error {
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return &sdk.ConfigError{Field: "settings", Reason: "not valid JSON: " + err.Error()}
	}
	if err := unknownFields(generic, reflect.TypeOf(*s), ""); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(s); err != nil {
		// Find the field (with list indexes) by decoding each one alone.
		field := fieldOfError(generic, reflect.TypeOf(*s), "")
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &sdk.ConfigError{Field: field, Reason: fmt.Sprintf("want %s, got %s", te.Type, te.Value)}
		}
		return &sdk.ConfigError{Field: field, Reason: err.Error()}
	}
	return nil
}

// unknownFields walks decoded JSON against the settings type and names the first
// field that the type does not have.
func unknownFields(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		if t.Kind() == reflect.Map {
			for _, k := range sortedKeys(x) {
				if err := unknownFields(x[k], t.Elem(), join(path, k)); err != nil {
					return err
				}
			}
			return nil
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(x) {
			ft, ok := fields[k]
			if !ok {
				known := make([]string, 0, len(fields))
				for n := range fields {
					known = append(known, n)
				}
				sort.Strings(known)
				name := k
				if name == "" {
					name = `""` // an empty key still names a field in the error
				}
				return &sdk.ConfigError{Field: join(path, name), Reason: "unknown setting; known here: " + strings.Join(known, ", ")}
			}
			if err := unknownFields(x[k], ft, join(path, k)); err != nil {
				return err
			}
		}
	case []any:
		if t.Kind() == reflect.Slice {
			for i, e := range x {
				if err := unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// fieldOfError finds the settings field whose value fails to decode.
func fieldOfError(v any, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		if t.Kind() == reflect.Struct {
			fields := jsonFields(t)
			for _, k := range sortedKeys(x) {
				ft := fields[k]
				b, _ := json.Marshal(x[k])
				if json.Unmarshal(b, reflect.New(ft).Interface()) != nil {
					return fieldOfError(x[k], ft, join(path, k))
				}
			}
		}
	case []any:
		if t.Kind() == reflect.Slice {
			for i, e := range x {
				b, _ := json.Marshal(e)
				if json.Unmarshal(b, reflect.New(t.Elem()).Interface()) != nil {
					return fieldOfError(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
				}
			}
		}
	}
	if path == "" {
		return "settings"
	}
	return path
}

func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f.Type
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
