package pgcdc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/plugins/internal/rowmap"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// Settings are the connector's settings in the agent's config file.
type Settings struct {
	// DSN is a PostgreSQL connection string (URL or key=value) for a role with the
	// REPLICATION attribute; replication=database is added by the connector.
	DSN string `json:"dsn"`
	// Slot is the logical replication slot (pgoutput) the connector consumes.
	Slot string `json:"slot"`
	// Publication names the tables the server decodes for the slot.
	Publication string `json:"publication"`
	// CreateSlot and CreatePublication let the connector create what is missing.
	CreateSlot        bool            `json:"create_slot,omitempty"`
	CreatePublication bool            `json:"create_publication,omitempty"`
	Tables            []TableSettings `json:"tables"`
	// StatusInterval is how often the connector reports its confirmed position to the
	// server (standby status update). Default 10s; it must stay well below the server's
	// wal_sender_timeout (60s by default).
	StatusInterval string `json:"status_interval,omitempty"`
	// SlotBusyTimeout is how long Read waits for a slot still held by a previous
	// connection (a restart right after a crash) before giving up. Default 30s.
	SlotBusyTimeout string `json:"slot_busy_timeout,omitempty"`
}

// TableSettings maps one captured table to canonical events.
type TableSettings struct {
	// Name is "schema.table", or "table" in schema public.
	Name    string        `json:"name"`
	Mapping rowmap.Config `json:"mapping"`
	// OnDelete is what a deleted row means: "skip" (default: logged, nothing emitted)
	// or "zero" (inventory.level only: the level of the deleted row's SKU and location
	// with on_hand, allocated and available set to 0).
	OnDelete string `json:"on_delete,omitempty"`
}

const (
	deleteSkip = "skip"
	deleteZero = "zero"

	defaultStatusInterval  = 10 * time.Second
	defaultSlotBusyTimeout = 30 * time.Second
)

// nameRE is what slot and publication names may be: PostgreSQL folds unquoted names in
// publication_names to lower case, so only lower-case names are unambiguous.
var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// config is validated Settings.
type config struct {
	Settings
	conn            *pgconn.Config
	tables          map[tableName]*table
	order           []tableName // as configured
	statusInterval  time.Duration
	slotBusyTimeout time.Duration
}

type tableName struct{ schema, name string }

func (t tableName) String() string { return t.schema + "." + t.name }

// table is one configured table, ready to map rows.
type table struct {
	name     tableName
	path     string // "tables[i]", for messages
	mapping  *rowmap.Mapping
	onDelete string
	// zeroColumns are the columns set to "0" for a deleted inventory row; keyColumns
	// must be present in a deleted row's old tuple (its replica identity).
	zeroColumns []string
	keyColumns  []string
}

func parseSettings(raw []byte) (*config, error) {
	var s Settings
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, settingsJSONError(err)
	}
	bad := func(field, format string, args ...any) error {
		return &sdk.ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	c := &config{Settings: s, tables: map[tableName]*table{},
		statusInterval: defaultStatusInterval, slotBusyTimeout: defaultSlotBusyTimeout}
	if strings.TrimSpace(s.DSN) == "" {
		return nil, bad("dsn", "required: a PostgreSQL connection string for a role with REPLICATION")
	}
	pc, err := pgconn.ParseConfig(s.DSN)
	if err != nil {
		return nil, bad("dsn", "not a PostgreSQL connection string: %v", err) // pgconn redacts the password
	}
	pc.RuntimeParams["replication"] = "database"
	// Text values in the stream follow the session settings: ISO dates in UTC.
	pc.RuntimeParams["TimeZone"] = "UTC"
	pc.RuntimeParams["DateStyle"] = "ISO"
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "crossdock-pgcdc"
	}
	c.conn = pc
	for _, n := range []struct{ field, v string }{{"slot", s.Slot}, {"publication", s.Publication}} {
		if !nameRE.MatchString(n.v) {
			return nil, bad(n.field, "%q must be 1 to 63 lower-case letters, digits or '_', not starting with a digit", n.v)
		}
	}
	for _, d := range []struct {
		field string
		text  string
		dst   *time.Duration
		min   time.Duration
	}{
		{"status_interval", s.StatusInterval, &c.statusInterval, 10 * time.Millisecond},
		{"slot_busy_timeout", s.SlotBusyTimeout, &c.slotBusyTimeout, 0},
	} {
		field := d.field
		if d.text == "" {
			continue
		}
		v, err := time.ParseDuration(d.text)
		if err != nil {
			return nil, bad(field, "%q is not a duration such as \"10s\"", d.text)
		}
		if v < d.min || v > time.Hour {
			return nil, bad(field, "%s is out of range (%s to 1h)", v, d.min)
		}
		*d.dst = v
	}
	if len(s.Tables) == 0 {
		return nil, bad("tables", "required: at least one table to capture")
	}
	for i, ts := range s.Tables {
		path := fmt.Sprintf("tables[%d]", i)
		tn, err := parseTableName(ts.Name)
		if err != nil {
			return nil, bad(path+".name", "%v", err)
		}
		if prev, dup := c.tables[tn]; dup {
			return nil, bad(path+".name", "%s is already configured in %s", tn, prev.path)
		}
		m, err := rowmap.New(path+".mapping", ts.Mapping)
		if err != nil {
			return nil, err
		}
		t := &table{name: tn, path: path, mapping: m, onDelete: ts.OnDelete}
		switch ts.OnDelete {
		case "":
			t.onDelete = deleteSkip
		case deleteSkip:
		case deleteZero:
			if m.Type() != canonical.TypeInventoryLevel {
				return nil, bad(path+".on_delete", "zero applies to inventory.level mappings only (this one is %s); use skip", m.Type())
			}
			for _, f := range []string{"on_hand", "allocated", "available"} {
				if col := ts.Mapping.Fields[f]; col != "" {
					t.zeroColumns = append(t.zeroColumns, col)
				}
			}
			for _, f := range []string{"sku", "location"} {
				if col := ts.Mapping.Fields[f]; col != "" {
					t.keyColumns = append(t.keyColumns, col)
				}
			}
			for _, k := range canonical.SortedKeys(ts.Mapping.Keys) {
				t.keyColumns = append(t.keyColumns, ts.Mapping.Keys[k])
			}
		default:
			return nil, bad(path+".on_delete", "%q is not skip or zero", ts.OnDelete)
		}
		c.tables[tn] = t
		c.order = append(c.order, tn)
	}
	return c, nil
}

// parseTableName reads "schema.table" or "table" (schema public). Names are taken
// literally, as PostgreSQL stores them (unquoted names are lower case).
func parseTableName(s string) (tableName, error) {
	if strings.TrimSpace(s) == "" {
		return tableName{}, errors.New("required: \"schema.table\" or \"table\"")
	}
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return tableName{}, fmt.Errorf("%q is not \"schema.table\" or \"table\"", s)
	}
	return tableName{schema, name}, nil
}

func settingsJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return &sdk.ConfigError{Field: "settings", Reason: fmt.Sprintf("want a JSON object, got a JSON %s", te.Value)}
		}
		return &sdk.ConfigError{Field: te.Field, Reason: fmt.Sprintf("want a %s, got a JSON %s", te.Type, te.Value)}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name := strings.Trim(f, `"`)
		if name == "" {
			return &sdk.ConfigError{Field: "settings", Reason: `unknown setting ""`}
		}
		return &sdk.ConfigError{Field: name, Reason: "unknown setting"}
	}
	return &sdk.ConfigError{Field: "settings", Reason: fmt.Sprintf("not valid JSON: %v", err)}
}
