package pgcdc

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestPositionRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Position
		out  string
	}{
		{"v1:0/0", Position{}, "v1:0/0"},
		{"v1:16/B374D848", Position{LSN: 0x16B374D848}, "v1:16/B374D848"},
		{"v1:16/b374d848", Position{LSN: 0x16B374D848}, "v1:16/B374D848"},
		{"v1:0/16B3748:0", Position{LSN: 0x16B3748, HasOrdinal: true}, "v1:0/16B3748:0"},
		{"v1:FFFFFFFF/FFFFFFFF:42", Position{LSN: pglogrepl.LSN(^uint64(0)), Ordinal: 42, HasOrdinal: true}, "v1:FFFFFFFF/FFFFFFFF:42"},
	} {
		p, err := ParsePosition(tc.in)
		if err != nil {
			t.Fatalf("ParsePosition(%q): %v", tc.in, err)
		}
		if p != tc.want {
			t.Fatalf("ParsePosition(%q) = %+v, want %+v", tc.in, p, tc.want)
		}
		if p.String() != tc.out {
			t.Fatalf("String() = %q, want %q", p.String(), tc.out)
		}
	}
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{
		"", "0/16B3748", "v2:0/1", "v1:", "v1:0", "v1:/1", "v1:1/", "v1:x/1", "v1:123456789/0",
		"v1:0/1:", "v1:0/1:-1", "v1:0/1:+1", "v1:0/1:1:2", "v1: 0/1", "v1:0/1 ", "v1:+0/1",
		"v1:0/1:99999999999999999999",
	} {
		if p, err := ParsePosition(s); err == nil {
			t.Errorf("ParsePosition(%q) = %+v, want an error", s, p)
		}
	}
}

func TestPositionCovers(t *testing.T) {
	batch := Position{LSN: 100}
	ev := Position{LSN: 100, Ordinal: 2, HasOrdinal: true}
	for _, tc := range []struct {
		p    Position
		lsn  pglogrepl.LSN
		ord  uint64
		want bool
	}{
		{batch, 99, 7, true},
		{batch, 100, 1 << 40, true},
		{batch, 101, 0, false},
		{ev, 100, 2, true},
		{ev, 100, 3, false},
		{ev, 99, 9, true},
		{Position{}, 1, 0, false},
	} {
		if got := tc.p.Covers(tc.lsn, tc.ord); got != tc.want {
			t.Errorf("%v.Covers(%v, %d) = %v, want %v", tc.p, tc.lsn, tc.ord, got, tc.want)
		}
	}
}

// FuzzParsePosition: whatever parses re-encodes to a string that parses to the same
// position, and the encoding is canonical (a second round trip changes nothing).
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"v1:0/0", "v1:16/B374D848", "v1:0/16B3748:3", "v1:0/1:", "v2:0/1", "v1:ffffffff/ffffffff:18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		enc := p.String()
		q, err := ParsePosition(enc)
		if err != nil {
			t.Fatalf("%q parsed to %+v whose encoding %q does not parse: %v", s, p, enc, err)
		}
		if q != p || q.String() != enc {
			t.Fatalf("%q: round trip %+v -> %q -> %+v", s, p, enc, q)
		}
	})
}
