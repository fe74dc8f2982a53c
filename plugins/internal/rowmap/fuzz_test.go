package rowmap

import (
	"testing"

	"github.com/crossdock/crossdock/internal/canonical"
)

// FuzzBuild feeds arbitrary text to a mapping with a decimal field, a timestamp and a
// JSON lines column: Build never panics, and what it builds is a valid event.
func FuzzBuild(f *testing.F) {
	m, err := New("m", Config{Type: "order", Fields: map[string]string{"order_number": "no", "total": "total", "lines": "lines"}, OccurredAt: "at"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("SO-1", "12.50", `[{"sku":"A","quantity":2,"unit_price":"1.25"}]`, "2026-03-01 10:00:00")
	f.Add("SO-2", "-0", `[]`, "2026-03-01T10:00:00.123456789+02:00")
	f.Add("", "1e5", `[{"sku":"A","quantity":1e400}]`, "2026-02-30")
	f.Fuzz(func(t *testing.T, no, total, lines, at string) {
		ev, err := m.Build(map[string]any{"no": no, "total": total, "lines": lines, "at": at})
		if err != nil {
			return
		}
		if err := canonical.Validate(ev); err != nil {
			t.Fatalf("Build made an invalid event: %v", err)
		}
	})
}
