package pgcdc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// positionVersion prefixes every position this connector emits, so a later encoding can
// be told apart from this one.
const positionVersion = "v1"

// Position is a place in the replication stream: the commit LSN of a transaction and,
// for a single event, its ordinal inside that transaction (0-based).
//
// Encoded as "v1:<LSN>" for a whole transaction (a batch position) and "v1:<LSN>:<n>"
// for the n-th event of it, where <LSN> is PostgreSQL's own notation ("16/B374D848"), the
// one pg_replication_slots and pg_current_wal_lsn() show.
type Position struct {
	LSN pglogrepl.LSN
	// Ordinal is the event's index in its transaction; meaningful only when HasOrdinal.
	Ordinal    uint64
	HasOrdinal bool
}

// String encodes p.
func (p Position) String() string {
	s := positionVersion + ":" + p.LSN.String()
	if p.HasOrdinal {
		s += ":" + strconv.FormatUint(p.Ordinal, 10)
	}
	return s
}

// Covers reports whether the event at (lsn, ordinal) is at or below p, i.e. already
// durable in the agent when p is the agent's committed position.
func (p Position) Covers(lsn pglogrepl.LSN, ordinal uint64) bool {
	if lsn != p.LSN {
		return lsn < p.LSN
	}
	return !p.HasOrdinal || ordinal <= p.Ordinal
}

// ParsePosition decodes a position made by Position.String. Hex digits may be in either
// case; anything else is refused with the reason.
func ParsePosition(s string) (Position, error) {
	rest, ok := strings.CutPrefix(s, positionVersion+":")
	if !ok {
		return Position{}, fmt.Errorf("pgcdc position %q: want %q followed by an LSN such as 0/16B3748", s, positionVersion+":")
	}
	lsnText, ord, hasOrd := strings.Cut(rest, ":")
	lsn, err := parseLSN(lsnText)
	if err != nil {
		return Position{}, fmt.Errorf("pgcdc position %q: %w", s, err)
	}
	p := Position{LSN: lsn}
	if hasOrd {
		if ord == "" || strings.ContainsAny(ord, "+-_") {
			return Position{}, fmt.Errorf("pgcdc position %q: event ordinal %q is not a decimal number", s, ord)
		}
		n, err := strconv.ParseUint(ord, 10, 64)
		if err != nil {
			return Position{}, fmt.Errorf("pgcdc position %q: event ordinal %q is not a decimal number", s, ord)
		}
		p.Ordinal, p.HasOrdinal = n, true
	}
	return p, nil
}

// parseLSN reads "<hi>/<lo>" with each half 1 to 8 hex digits. pglogrepl.ParseLSN uses
// Sscanf, which accepts signs, spaces and trailing text.
func parseLSN(s string) (pglogrepl.LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("LSN %q: want two hex numbers separated by '/'", s)
	}
	h, err := parseHex32(hi)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	l, err := parseHex32(lo)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return pglogrepl.LSN(h<<32 | l), nil
}

func parseHex32(s string) (uint64, error) {
	if s == "" || len(s) > 8 {
		return 0, fmt.Errorf("%q is not 1 to 8 hex digits", s)
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return 0, fmt.Errorf("%q is not 1 to 8 hex digits", s)
		}
	}
	return strconv.ParseUint(s, 16, 32)
}
