package tryton

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Tryton's JSON-RPC encodes datetimes, dates and decimals as objects tagged with
// "__class__"; datetimes are naive and in UTC.

// tdatetime is a Tryton datetime (or null).
type tdatetime struct{ time.Time }

func (d *tdatetime) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) || bytes.Equal(b, []byte("false")) {
		d.Time = time.Time{}
		return nil
	}
	var v struct {
		Class                                            string `json:"__class__"`
		Year, Month, Day, Hour, Minute, Second, Microsec int
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("datetime: %w", err)
	}
	if err := json.Unmarshal(raw["__class__"], &v.Class); err != nil || (v.Class != "datetime" && v.Class != "date") {
		return fmt.Errorf("datetime: not a Tryton datetime: %.80s", b)
	}
	for k, p := range map[string]*int{"year": &v.Year, "month": &v.Month, "day": &v.Day,
		"hour": &v.Hour, "minute": &v.Minute, "second": &v.Second, "microsecond": &v.Microsec} {
		if r, ok := raw[k]; ok {
			if err := json.Unmarshal(r, p); err != nil {
				return fmt.Errorf("datetime.%s: %w", k, err)
			}
		}
	}
	if v.Year < 1 || v.Year > 9999 || v.Month < 1 || v.Month > 12 || v.Day < 1 || v.Day > 31 {
		return fmt.Errorf("datetime: date out of range: %.80s", b)
	}
	d.Time = time.Date(v.Year, time.Month(v.Month), v.Day, v.Hour, v.Minute, v.Second, v.Microsec*1000, time.UTC)
	return nil
}

// datetimeArg encodes t for a Tryton domain.
func datetimeArg(t time.Time) map[string]any {
	t = t.UTC()
	return map[string]any{"__class__": "datetime", "year": t.Year(), "month": int(t.Month()), "day": t.Day(),
		"hour": t.Hour(), "minute": t.Minute(), "second": t.Second(), "microsecond": t.Nanosecond() / 1000}
}

// decimalArg encodes a decimal string for Tryton.
func decimalArg(s string) map[string]any { return map[string]any{"__class__": "Decimal", "decimal": s} }

// tnumber is a quantity or amount as a decimal string: Tryton sends floats for
// quantities and tagged Decimals for money.
type tnumber string

func (n *tnumber) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")), bytes.Equal(b, []byte("false")):
		*n = ""
		return nil
	case len(b) > 0 && b[0] == '{':
		var v struct {
			Class   string `json:"__class__"`
			Decimal string `json:"decimal"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("decimal: %w", err)
		}
		if v.Class != "Decimal" {
			return fmt.Errorf("decimal: not a Tryton Decimal: %.80s", b)
		}
		f, err := strconv.ParseFloat(v.Decimal, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("decimal: %q is not a number", v.Decimal)
		}
		*n = tnumber(v.Decimal)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("number: %w", err)
	}
	*n = tnumber(strconv.FormatFloat(f, 'f', -1, 64))
	return nil
}

// ref is a Many2One value: an id or null.
type ref int64

func (r *ref) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) || bytes.Equal(b, []byte("false")) {
		*r = 0
		return nil
	}
	var v int64
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	*r = ref(v)
	return nil
}

// tstring is a Char field: a string, or false/null when empty.
type tstring string

func (s *tstring) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) || bytes.Equal(b, []byte("false")) {
		*s = ""
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = tstring(v)
	return nil
}

// tbool is a Boolean field; the SQLite backend answers 0 or 1.
type tbool bool

func (v *tbool) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true", "1":
		*v = true
	case "false", "0", "null":
		*v = false
	default:
		return fmt.Errorf("boolean: got %.40s", b)
	}
	return nil
}
