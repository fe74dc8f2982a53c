package tryton

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// position is where the source has read up to: for stock moves and for sales, the
// newest modification time (write_date, or create_date for records never written)
// already turned into events. Encoded as "v1;inv=<unix µs>;sale=<unix µs>;ship=<unix
// µs>"; the version prefix lets a later connector read positions an older one committed
// (ship= is optional: a position from before customer shipments were read starts them
// at the beginning).
type position struct {
	Inventory time.Time
	Sales     time.Time
	Shipments time.Time
}

const positionVersion = "v1"

func (p position) String() string {
	return fmt.Sprintf("%s;inv=%d;sale=%d;ship=%d", positionVersion, micros(p.Inventory), micros(p.Sales), micros(p.Shipments))
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// maxMicros is 9999-12-31, the largest datetime Tryton stores.
var maxMicros = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()

// parsePosition reads a position written by String. "" is the beginning.
func parsePosition(s string) (position, error) {
	var p position
	if s == "" {
		return p, nil
	}
	parts := strings.Split(s, ";")
	if parts[0] != positionVersion {
		return p, fmt.Errorf("tryton position %q: unknown version %q (want %q)", trim(s), trim(parts[0]), positionVersion)
	}
	seen := map[string]bool{}
	for _, part := range parts[1:] {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return p, fmt.Errorf("tryton position %q: %q is not name=value", trim(s), trim(part))
		}
		if seen[k] {
			return p, fmt.Errorf("tryton position %q: %q given twice", trim(s), trim(k))
		}
		seen[k] = true
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxMicros {
			return p, fmt.Errorf("tryton position %q: %s=%q is not a time in microseconds since 1970", trim(s), trim(k), trim(v))
		}
		var t time.Time
		if n > 0 {
			t = time.UnixMicro(n).UTC()
		}
		switch k {
		case "inv":
			p.Inventory = t
		case "sale":
			p.Sales = t
		case "ship":
			p.Shipments = t
		default:
			return p, fmt.Errorf("tryton position %q: unknown field %q", trim(s), trim(k))
		}
	}
	if !seen["inv"] || !seen["sale"] {
		return p, fmt.Errorf("tryton position %q: want both inv= and sale=", trim(s))
	}
	return p, nil
}

func trim(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
