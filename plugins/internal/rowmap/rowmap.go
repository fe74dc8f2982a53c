// Package rowmap turns database rows into canonical events. It is shared by the
// row-based connectors (sql, pgcdc): the settings name the event type and, for each
// canonical payload field, the column it comes from.
//
//	type: inventory.level
//	fields: {sku: item_code, location: warehouse, on_hand: qty}
//	keys: {sku: item_code}          # optional; default: the payload's business keys
//	values: {unit_of_measure: EA}   # optional constants
//	occurred_at: updated_at         # optional column
//
// Canonical field names are the payload's proto field names (snake_case). Repeated
// lines (order, shipment and return lines) come either one per row ("lines.sku",
// "lines.quantity", ... in fields: each row is a one-line document) or from one column
// holding a JSON array of line objects ("lines": the column).
//
// Quantities and money are decimal strings. Numeric columns are formatted exactly:
// integers as they are, NUMERIC/DECIMAL values as the driver returns their text,
// floating-point columns with the shortest decimal that round-trips; NaN and infinities
// are refused.
package rowmap

import (
	"bytes"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Config is a mapping as written in a connector's settings.
type Config struct {
	// Type is the canonical event type (inventory.level, item, price, order, ...).
	Type string `json:"type"`
	// Fields maps canonical payload field → column.
	Fields map[string]string `json:"fields"`
	// Keys maps business key name → column. When empty, the payload's default keys
	// (sku and location for an inventory level, ...) are used.
	Keys map[string]string `json:"keys,omitempty"`
	// Values are constants for canonical fields no column carries.
	Values map[string]string `json:"values,omitempty"`
	// OccurredAt is the column holding when the change happened.
	OccurredAt string `json:"occurred_at,omitempty"`
}

// payloadFields names the Event oneof field for each event type.
var payloadFields = map[string]protoreflect.Name{
	canonical.TypeItem:           "item",
	canonical.TypeInventoryLevel: "inventory_level",
	canonical.TypePrice:          "price",
	canonical.TypeOrder:          "order",
	canonical.TypeOrderAck:       "order_ack",
	canonical.TypeShipment:       "shipment",
	canonical.TypeInvoice:        "invoice",
	canonical.TypeSalesReturn:    "sales_return",
}

// decimalFields are the canonical fields holding quantities or money.
var decimalFields = map[protoreflect.Name]bool{
	"on_hand": true, "allocated": true, "available": true, "amount": true,
	"total": true, "quantity": true, "unit_price": true,
}

var (
	decimalRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	keyNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// Mapping is a validated Config, ready to build events.
type Mapping struct {
	cfg     Config
	payload protoreflect.FieldDescriptor // the Event oneof field
	fields  []fieldMap                   // sorted by canonical name
	lines   protoreflect.FieldDescriptor // the payload's repeated lines field, if mapped
	perRow  bool                         // lines.<f> mapped: one line per row
	jsonCol string                       // lines mapped to a JSON column
}

type fieldMap struct {
	name     string // canonical name as configured ("on_hand", "lines.sku")
	column   string // "" for a constant
	constant string
	fd       protoreflect.FieldDescriptor
	line     bool // fd belongs to the line message
}

// New validates cfg. Errors are *sdk.ConfigError with the field path under path (e.g.
// "tables[0].mapping"), so the operator sees "tables[0].mapping.fields.onhand: ...".
func New(path string, cfg Config) (*Mapping, error) {
	bad := func(field, format string, args ...any) error {
		return &sdk.ConfigError{Field: path + "." + field, Reason: fmt.Sprintf(format, args...)}
	}
	name, ok := payloadFields[cfg.Type]
	if !ok {
		return nil, bad("type", "%q is not an event type; one of %s", cfg.Type, strings.Join(Types(), ", "))
	}
	m := &Mapping{cfg: cfg}
	m.payload = (&eventv1.Event{}).ProtoReflect().Descriptor().Fields().ByName(name)
	pmd := m.payload.Message()
	if len(cfg.Fields) == 0 {
		return nil, bad("fields", "required: map canonical %s fields to columns (one of %s)", cfg.Type, strings.Join(FieldNames(cfg.Type), ", "))
	}
	add := func(kind, canon, column, constant string) error {
		if kind == "fields" && strings.TrimSpace(column) == "" {
			return bad(kind+"."+canon, "column name is empty")
		}
		if canon == "lines" && kind == "fields" {
			lf := pmd.Fields().ByName("lines")
			if lf == nil {
				return bad(kind+"."+canon, "%s has no lines", cfg.Type)
			}
			m.lines, m.jsonCol = lf, column
			return nil
		}
		fm := fieldMap{name: canon, column: column, constant: constant}
		fname := canon
		md := pmd
		if rest, ok := strings.CutPrefix(canon, "lines."); ok {
			lf := pmd.Fields().ByName("lines")
			if lf == nil {
				return bad(kind+"."+canon, "%s has no lines", cfg.Type)
			}
			m.lines, m.perRow, fm.line = lf, true, true
			md, fname = lf.Message(), rest
		}
		fd := md.Fields().ByName(protoreflect.Name(fname))
		if fd == nil || fd.IsList() || !(fd.Kind() == protoreflect.StringKind || isTimestamp(fd)) {
			return bad(kind+"."+canon, "unknown %s field; one of %s", cfg.Type, strings.Join(FieldNames(cfg.Type), ", "))
		}
		if constant != "" && decimalFields[fd.Name()] && !decimalRE.MatchString(constant) {
			return bad(kind+"."+canon, "%q is not a decimal number", constant)
		}
		fm.fd = fd
		m.fields = append(m.fields, fm)
		return nil
	}
	for _, canon := range sortedKeys(cfg.Fields) {
		if err := add("fields", canon, cfg.Fields[canon], ""); err != nil {
			return nil, err
		}
	}
	for _, canon := range sortedKeys(cfg.Values) {
		if _, dup := cfg.Fields[canon]; dup {
			return nil, bad("values."+canon, "also mapped to a column in fields")
		}
		if cfg.Values[canon] == "" {
			return nil, bad("values."+canon, "constant is empty")
		}
		if err := add("values", canon, "", cfg.Values[canon]); err != nil {
			return nil, err
		}
	}
	if m.perRow && m.jsonCol != "" {
		return nil, bad("fields.lines", "map lines either to a JSON column (lines) or per row (lines.<field>), not both")
	}
	for _, k := range sortedKeys(cfg.Keys) {
		if len(k) > canonical.MaxKeyLen || !keyNameRE.MatchString(k) {
			return nil, bad("keys."+k, "key name must be lower_snake_case, at most %d characters", canonical.MaxKeyLen)
		}
		if strings.TrimSpace(cfg.Keys[k]) == "" {
			return nil, bad("keys."+k, "column name is empty")
		}
	}
	if len(cfg.Keys) > canonical.MaxKeys {
		return nil, bad("keys", "more than %d keys", canonical.MaxKeys)
	}
	return m, nil
}

func isTimestamp(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Timestamp"
}

// Columns lists every column the mapping reads, sorted and without duplicates.
func (m *Mapping) Columns() []string {
	set := map[string]bool{}
	for _, f := range m.fields {
		if f.column != "" {
			set[f.column] = true
		}
	}
	for _, c := range m.cfg.Keys {
		set[c] = true
	}
	if m.jsonCol != "" {
		set[m.jsonCol] = true
	}
	if m.cfg.OccurredAt != "" {
		set[m.cfg.OccurredAt] = true
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Type is the event type the mapping builds.
func (m *Mapping) Type() string { return m.cfg.Type }

// Build makes a canonical event from one row (column → value as database/sql scans it
// into `any`). The event is normalized (type and default keys filled in) and valid; an
// error names the canonical field and its column.
func (m *Mapping) Build(row map[string]any) (*eventv1.Event, error) {
	ev := &eventv1.Event{Type: m.cfg.Type}
	evr := ev.ProtoReflect()
	payload := evr.NewField(m.payload).Message()
	var line protoreflect.Message
	if m.perRow {
		line = payload.NewField(m.lines).List().NewElement().Message()
	}
	for _, f := range m.fields {
		target := payload
		if f.line {
			target = line
		}
		if f.column == "" {
			setString(target, f.fd, f.constant)
			continue
		}
		v, ok := row[f.column]
		if !ok {
			return nil, fmt.Errorf("%s: column %q is not in the row", f.name, f.column)
		}
		if err := setValue(target, f.fd, v); err != nil {
			return nil, fmt.Errorf("%s (column %q): %w", f.name, f.column, err)
		}
	}
	if m.perRow {
		l := payload.Mutable(m.lines).List()
		l.Append(protoreflect.ValueOfMessage(line))
	}
	if m.jsonCol != "" {
		v, ok := row[m.jsonCol]
		if !ok {
			return nil, fmt.Errorf("lines: column %q is not in the row", m.jsonCol)
		}
		if err := m.jsonLines(payload, v); err != nil {
			return nil, fmt.Errorf("lines (column %q): %w", m.jsonCol, err)
		}
	}
	evr.Set(m.payload, protoreflect.ValueOfMessage(payload))
	if m.cfg.OccurredAt != "" {
		v, ok := row[m.cfg.OccurredAt]
		if !ok {
			return nil, fmt.Errorf("occurred_at: column %q is not in the row", m.cfg.OccurredAt)
		}
		if v != nil {
			t, err := toTime(v)
			if err != nil {
				return nil, fmt.Errorf("occurred_at (column %q): %w", m.cfg.OccurredAt, err)
			}
			ev.OccurredAt = timestamppb.New(t)
		}
	}
	if len(m.cfg.Keys) > 0 {
		ev.Keys = make(map[string]string, len(m.cfg.Keys))
		for _, k := range sortedKeys(m.cfg.Keys) {
			col := m.cfg.Keys[k]
			v, ok := row[col]
			if !ok {
				return nil, fmt.Errorf("keys.%s: column %q is not in the row", k, col)
			}
			s, err := toString(v)
			if err != nil {
				return nil, fmt.Errorf("keys.%s (column %q): %w", k, col, err)
			}
			if s == "" {
				return nil, fmt.Errorf("keys.%s (column %q): value is empty", k, col)
			}
			ev.Keys[k] = s
		}
	}
	canonical.Normalize(ev)
	if err := canonical.Validate(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

func (m *Mapping) jsonLines(payload protoreflect.Message, v any) error {
	var raw []byte
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		raw = []byte(x)
	case []byte:
		raw = x
	default:
		return fmt.Errorf("want a JSON array of line objects, got %T", v)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep decimals exact
	var arr []map[string]any
	if err := dec.Decode(&arr); err != nil {
		return fmt.Errorf("want a JSON array of line objects: %w", err)
	}
	lmd := m.lines.Message()
	list := payload.Mutable(m.lines).List()
	for i, obj := range arr {
		line := list.NewElement().Message()
		for _, k := range sortedKeys(obj) {
			fd := lmd.Fields().ByName(protoreflect.Name(k))
			if fd == nil || fd.Kind() != protoreflect.StringKind {
				return fmt.Errorf("[%d].%s: unknown line field", i, k)
			}
			val := obj[k]
			if n, ok := val.(json.Number); ok {
				val = string(n)
			}
			if err := setValue(line, fd, val); err != nil {
				return fmt.Errorf("[%d].%s: %w", i, k, err)
			}
		}
		list.Append(protoreflect.ValueOfMessage(line))
	}
	return nil
}

func setString(msg protoreflect.Message, fd protoreflect.FieldDescriptor, s string) {
	msg.Set(fd, protoreflect.ValueOfString(s))
}

func setValue(msg protoreflect.Message, fd protoreflect.FieldDescriptor, v any) error {
	if v == nil {
		return nil // NULL: the field stays empty
	}
	if isTimestamp(fd) {
		t, err := toTime(v)
		if err != nil {
			return err
		}
		msg.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()))
		return nil
	}
	var s string
	var err error
	if decimalFields[fd.Name()] {
		s, err = Decimal(v)
	} else {
		s, err = toString(v)
	}
	if err != nil {
		return err
	}
	if s != "" {
		setString(msg, fd, s)
	}
	return nil
}

// Decimal formats a scanned numeric value as an exact decimal string.
func Decimal(v any) (string, error) {
	switch x := v.(type) {
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int:
		return strconv.Itoa(x), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case uint32:
		return strconv.FormatUint(uint64(x), 10), nil
	case float64:
		return floatDecimal(x, 64)
	case float32:
		return floatDecimal(float64(x), 32)
	case []byte:
		return Decimal(string(x))
	case string:
		s := strings.TrimSpace(x)
		if !decimalRE.MatchString(s) {
			return "", fmt.Errorf("%q is not a decimal number", x)
		}
		return s, nil
	case driver.Valuer:
		dv, err := x.Value()
		if err != nil {
			return "", err
		}
		if _, again := dv.(driver.Valuer); again {
			return "", fmt.Errorf("%T is not a number", v)
		}
		return Decimal(dv)
	}
	return "", fmt.Errorf("%T is not a number", v)
}

func floatDecimal(f float64, bits int) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("%v is not a finite number", f)
	}
	s := strconv.FormatFloat(f, 'f', -1, bits)
	if s == "-0" {
		s = "0"
	}
	return s, nil
}

func toString(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case bool:
		return strconv.FormatBool(x), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case int64, int, int32, uint64, uint32, float64, float32:
		return Decimal(x)
	case driver.Valuer:
		dv, err := x.Value()
		if err != nil {
			return "", err
		}
		if _, again := dv.(driver.Valuer); again {
			return "", fmt.Errorf("cannot use %T as text", v)
		}
		return toString(dv)
	}
	return "", fmt.Errorf("cannot use %T as text", v)
}

// timeLayouts are the textual timestamps drivers return (SQLite keeps timestamps as
// text); a value without a zone is UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999-07",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02",
}

func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case []byte:
		return toTime(string(x))
	case string:
		return ParseTime(x)
	}
	return time.Time{}, fmt.Errorf("%T is not a timestamp", v)
}

// ParseTime parses the textual timestamps databases return.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a timestamp (want RFC 3339 or \"2006-01-02 15:04:05\")", s)
}

// Types lists the event types a mapping can build.
func Types() []string {
	out := make([]string, 0, len(payloadFields))
	for t := range payloadFields {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// FieldNames lists the canonical fields a mapping of type t may name, "" when t is not
// an event type.
func FieldNames(t string) []string {
	name, ok := payloadFields[t]
	if !ok {
		return nil
	}
	md := (&eventv1.Event{}).ProtoReflect().Descriptor().Fields().ByName(name).Message()
	var out []string
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		switch {
		case fd.Name() == "lines":
			out = append(out, "lines")
			lf := fd.Message().Fields()
			for j := 0; j < lf.Len(); j++ {
				out = append(out, "lines."+string(lf.Get(j).Name()))
			}
		case fd.Kind() == protoreflect.StringKind || isTimestamp(fd):
			out = append(out, string(fd.Name()))
		}
	}
	return out
}

// ErrNoField is returned by Field for a path the event does not have.
var ErrNoField = errors.New("no such field")

// Field reads one value from an event for sinks that bind named parameters:
// "event_id", "type", "occurred_at" (RFC 3339, "" when unset), "keys.<name>", a payload
// field ("sku", "on_hand") or a line field ("lines.sku") from line, which may be nil.
func Field(ev *eventv1.Event, line protoreflect.Message, path string) (string, error) {
	switch path {
	case "event_id":
		return ev.GetId(), nil
	case "type":
		return ev.GetType(), nil
	case "occurred_at":
		if ev.OccurredAt == nil {
			return "", nil
		}
		return ev.OccurredAt.AsTime().UTC().Format(time.RFC3339Nano), nil
	}
	if k, ok := strings.CutPrefix(path, "keys."); ok {
		return ev.GetKeys()[k], nil
	}
	evr := ev.ProtoReflect()
	od := evr.Descriptor().Oneofs().ByName("payload")
	pfd := evr.WhichOneof(od)
	if pfd == nil {
		return "", fmt.Errorf("%s: event has no payload: %w", path, ErrNoField)
	}
	msg := evr.Get(pfd).Message()
	name := path
	if rest, ok := strings.CutPrefix(path, "lines."); ok {
		if line == nil {
			return "", fmt.Errorf("%s: no line (set for_each: lines): %w", path, ErrNoField)
		}
		msg, name = line, rest
	}
	fd := msg.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		return "", fmt.Errorf("%s: %s has no such field: %w", path, ev.GetType(), ErrNoField)
	}
	switch {
	case fd.Kind() == protoreflect.StringKind && !fd.IsList():
		return msg.Get(fd).String(), nil
	case isTimestamp(fd):
		if !msg.Has(fd) {
			return "", nil
		}
		ts := msg.Get(fd).Message().Interface().(*timestamppb.Timestamp)
		return ts.AsTime().UTC().Format(time.RFC3339Nano), nil
	}
	return "", fmt.Errorf("%s: not a single value: %w", path, ErrNoField)
}

// Lines returns the event payload's lines (order, shipment, return), nil when it has
// none.
func Lines(ev *eventv1.Event) []protoreflect.Message {
	evr := ev.ProtoReflect()
	pfd := evr.WhichOneof(evr.Descriptor().Oneofs().ByName("payload"))
	if pfd == nil {
		return nil
	}
	msg := evr.Get(pfd).Message()
	lf := msg.Descriptor().Fields().ByName("lines")
	if lf == nil {
		return nil
	}
	l := msg.Get(lf).List()
	out := make([]protoreflect.Message, l.Len())
	for i := range out {
		out[i] = l.Get(i).Message()
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
