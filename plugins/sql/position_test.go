package sql

import (
	"strings"
	"testing"
	"time"
)

func TestPositionRoundTrip(t *testing.T) {
	p := Position{Tables: map[string]TableState{
		"stock": {TS: must(ValueOf(time.Date(2026, 3, 1, 10, 0, 0, 1000, time.FixedZone("", 3600)))), Key: must(ValueOf(int64(-42)))},
		"items": {TS: must(ValueOf(uint64(1 << 63))), Key: must(ValueOf([]byte("A|\"b\"")))},
		"snap":  {Run: "2026-03-01T10:00:00Z", Key: must(ValueOf(1.5)), Done: true},
	}}
	s := p.String()
	q, err := ParsePosition(s)
	if err != nil {
		t.Fatal(err)
	}
	if q.String() != s {
		t.Fatalf("round trip:\n%s\n%s", s, q.String())
	}
	if !strings.Contains(s, `"t:2026-03-01T09:00:00.000001Z"`) {
		t.Fatalf("timestamp not kept in UTC: %s", s)
	}
	ts := q.Tables["stock"].TS.Arg().(time.Time)
	if !ts.Equal(time.Date(2026, 3, 1, 9, 0, 0, 1000, time.UTC)) {
		t.Fatalf("timestamp = %v", ts)
	}
	if q.Tables["stock"].Key.Arg().(int64) != -42 || q.Tables["items"].Key.Arg().(string) != "A|\"b\"" {
		t.Fatalf("keys = %+v", q.Tables)
	}
}

func must(v Value, err error) Value {
	if err != nil {
		panic(err)
	}
	return v
}

func TestParsePositionErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"v":2,"tables":{}}`:                         "version 2",
		`{"v":1,"tables":{"a":{"ts":"x:1"}}}`:         "unknown kind",
		`{"v":1,"tables":{"a":{"ts":"i:1.5"}}}`:       "invalid syntax",
		`{"v":1,"tables":{"a":{"ts":"t:yesterday"}}}`: "cannot parse",
		`{"v":1,"tables":{"a":{"ts":"f:NaN"}}}`:       "not a finite number",
		`{"v":1,"tables":{"a":{"done":true}}}`:        "done without a run",
		`{"v":1,"tables":{"a":{"run":"soon"}}}`:       "tables.a.run",
		`{"v":1,"tables":{"a":{"lsn":"0/0"}}}`:        "unknown field",
		`{"v":1,"tables":{}} {}`:                      "trailing data",
		`0/16B3748`:                                   "cannot unmarshal",
	} {
		if _, err := ParsePosition(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePosition(%s) = %v, want ...%s...", in, err, want)
		}
	}
}

// FuzzParsePosition: whatever the input, no panic; what parses re-encodes to a
// position that parses to the same encoding.
func FuzzParsePosition(f *testing.F) {
	f.Add(`{"v":1,"tables":{"stock":{"ts":"t:2026-03-01T10:00:00.000001Z","key":"i:42"}}}`)
	f.Add(`{"v":1,"tables":{"s":{"key":"s:A","run":"2026-03-01T10:00:00Z","done":true}}}`)
	f.Add(`{"v":1,"tables":{"x":{"ts":"u:18446744073709551615","key":"f:1e-7"}}}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		enc := p.String()
		q, err := ParsePosition(enc)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", enc, err)
		}
		if q.String() != enc {
			t.Fatalf("unstable encoding: %q then %q", enc, q.String())
		}
	})
}

func TestParseNamed(t *testing.T) {
	pg := dialects["postgres"].placeholder
	ns, err := parseNamed(`INSERT INTO t (a, b, c) VALUES (:sku, :qty::numeric, ':not' || "x:y" || `+"`z:w`"+`) -- :comment
		ON CONFLICT DO UPDATE SET b = :qty /* :block */`, pg, true)
	if err != nil {
		t.Fatal(err)
	}
	want := `INSERT INTO t (a, b, c) VALUES ($1, $2::numeric, ':not' || "x:y" || ` + "`z:w`" + `) -- :comment
		ON CONFLICT DO UPDATE SET b = $2 /* :block */`
	if ns.Query != want || strings.Join(ns.Args, ",") != "sku,qty" {
		t.Fatalf("got %q %v", ns.Query, ns.Args)
	}
	q := dialects["sqlite"].placeholder
	ns, err = parseNamed(`CALL p(:a, 'it''s', :b, :a)`, q, false)
	if err != nil || ns.Query != `CALL p(?, 'it''s', ?, ?)` || strings.Join(ns.Args, ",") != "a,b,a" {
		t.Fatalf("got %q %v %v", ns.Query, ns.Args, err)
	}
	for _, bad := range []string{`VALUES (':x)`, `/* :x`, `"abc`} {
		if _, err := parseNamed(bad, q, false); err == nil {
			t.Errorf("parseNamed(%q) accepted", bad)
		}
	}
}

// FuzzParseNamed: no panic; each placeholder stands for one listed name, and text
// outside parameters is kept.
func FuzzParseNamed(f *testing.F) {
	f.Add(`INSERT INTO t VALUES (:a, :b::int, ':c', "d:e") -- :f`)
	f.Add(`CALL p(:x /* :y */, 'it''s')`)
	f.Add(`::`)
	f.Fuzz(func(t *testing.T, s string) {
		ns, err := parseNamed(s, func(int) string { return "?" }, false)
		if err != nil {
			return
		}
		if strings.Count(ns.Query, "?")-strings.Count(s, "?") != len(ns.Args) {
			t.Fatalf("%q → %q with %d args", s, ns.Query, len(ns.Args))
		}
		for _, a := range ns.Args {
			if a == "" || !isNameStart(a[0]) {
				t.Fatalf("bad name %q", a)
			}
		}
	})
}
