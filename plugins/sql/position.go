package sql

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// positionVersion is the version of the position encoding. A position with another
// version is refused, so a newer agent's positions are never misread.
const positionVersion = 1

// Position is the source position: per configured table (by name), where capture
// stands. Encoded as JSON with sorted keys, e.g.
//
//	{"v":1,"tables":{"stock":{"ts":"t:2026-03-01T10:00:00.5Z","key":"i:42"}}}
type Position struct {
	V      int                   `json:"v"`
	Tables map[string]TableState `json:"tables"`
}

// TableState is one table's place.
type TableState struct {
	// Incremental mode: the (tracking value, key) of the last row emitted.
	TS  Value `json:"ts,omitzero"`
	Key Value `json:"key,omitzero"`
	// Snapshot mode: the current run's start (RFC 3339, UTC), the key of the last row
	// emitted in it (Key) and whether the run finished.
	Run  string `json:"run,omitempty"`
	Done bool   `json:"done,omitempty"`
}

// Value is a column value kept in a position with its type, so it is bound back to the
// query as what the driver returned: "i:42" (integer), "u:42" (unsigned), "f:1.5"
// (float, shortest round-trip form), "s:text" (text; bytes are kept as text so the
// database compares with the column's collation), "t:RFC3339Nano" (timestamp).
type Value struct {
	Kind byte // 'i', 'u', 'f', 's', 't'; 0 means no value
	Raw  string
}

// IsZero reports whether v holds no value.
func (v Value) IsZero() bool { return v.Kind == 0 }

// ValueOf keeps a scanned column value.
func ValueOf(x any) (Value, error) {
	switch t := x.(type) {
	case int64:
		return Value{'i', strconv.FormatInt(t, 10)}, nil
	case int32:
		return Value{'i', strconv.FormatInt(int64(t), 10)}, nil
	case int:
		return Value{'i', strconv.Itoa(t)}, nil
	case uint64:
		return Value{'u', strconv.FormatUint(t, 10)}, nil
	case uint32:
		return Value{'u', strconv.FormatUint(uint64(t), 10)}, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return Value{}, fmt.Errorf("%v cannot order rows", t)
		}
		return Value{'f', strconv.FormatFloat(t, 'g', -1, 64)}, nil
	case string:
		return Value{'s', t}, nil
	case []byte:
		return Value{'s', string(t)}, nil
	case time.Time:
		// UTC, so the same row version has the same position (and event id) whatever
		// the agent's time zone; drivers bind it back as the same instant.
		return Value{'t', t.UTC().Format(time.RFC3339Nano)}, nil
	case nil:
		return Value{}, fmt.Errorf("value is NULL")
	}
	return Value{}, fmt.Errorf("cannot keep a %T in a position", x)
}

// Arg is the value to bind to a query parameter.
func (v Value) Arg() any {
	switch v.Kind {
	case 'i':
		n, _ := strconv.ParseInt(v.Raw, 10, 64)
		return n
	case 'u':
		n, _ := strconv.ParseUint(v.Raw, 10, 64)
		return n
	case 'f':
		f, _ := strconv.ParseFloat(v.Raw, 64)
		return f
	case 't':
		t, _ := time.Parse(time.RFC3339Nano, v.Raw)
		return t
	}
	return v.Raw
}

// String is the tagged form, "i:42".
func (v Value) String() string {
	if v.Kind == 0 {
		return ""
	}
	return string(v.Kind) + ":" + v.Raw
}

// MarshalText implements encoding.TextMarshaler.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText parses the tagged form, checking the value.
func (v *Value) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "" {
		*v = Value{}
		return nil
	}
	kind, raw, ok := strings.Cut(s, ":")
	if !ok || len(kind) != 1 {
		return fmt.Errorf("value %q: want kind:value (i, u, f, s or t)", s)
	}
	// Keep the canonical text, so that parse → format → parse is stable.
	switch kind[0] {
	case 'i':
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q: %w", s, err)
		}
		raw = strconv.FormatInt(n, 10)
	case 'u':
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q: %w", s, err)
		}
		raw = strconv.FormatUint(n, 10)
	case 'f':
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("value %q: not a finite number", s)
		}
		raw = strconv.FormatFloat(f, 'g', -1, 64)
	case 's':
		if !utf8.ValidString(raw) {
			return fmt.Errorf("value %q: not UTF-8", s)
		}
	case 't':
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			return fmt.Errorf("value %q: %w", s, err)
		}
		raw = t.Format(time.RFC3339Nano)
	default:
		return fmt.Errorf("value %q: unknown kind %q (want i, u, f, s or t)", s, kind)
	}
	*v = Value{kind[0], raw}
	return nil
}

// ParsePosition parses a position emitted by this connector. "" is the empty position.
func ParsePosition(s string) (Position, error) {
	p := Position{V: positionVersion, Tables: map[string]TableState{}}
	if s == "" {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	var q Position
	if err := dec.Decode(&q); err != nil {
		return p, fmt.Errorf("sql position %q: %w", truncate(s), err)
	}
	if dec.More() {
		return p, fmt.Errorf("sql position %q: trailing data", truncate(s))
	}
	if q.V != positionVersion {
		return p, fmt.Errorf("sql position %q: version %d, this connector reads version %d", truncate(s), q.V, positionVersion)
	}
	for name, st := range q.Tables {
		if st.Run != "" {
			if _, err := time.Parse(time.RFC3339Nano, st.Run); err != nil {
				return p, fmt.Errorf("sql position: tables.%s.run: %w", name, err)
			}
		}
		if st.Done && st.Run == "" {
			return p, fmt.Errorf("sql position: tables.%s: done without a run", name)
		}
		p.Tables[name] = st
	}
	return p, nil
}

// String encodes p (deterministically: map keys sorted).
func (p Position) String() string {
	p.V = positionVersion
	b, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("sql: encode position: %v", err)) // only strings and ints inside
	}
	return string(b)
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
