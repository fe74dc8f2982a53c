package benchkit

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ParseSizes reads a list of event counts such as "1M,4M,16M" (K = 1,000,
// M = 1,000,000), sorted ascending.
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "M"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "M")
		case strings.HasSuffix(f, "K"):
			mult, f = 1_000, strings.TrimSuffix(f, "K")
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("size %q: want a positive count like 500K or 4M", f)
		}
		out = append(out, int(v*float64(mult)))
	}
	slices.Sort(out)
	return out, nil
}

// SizeLabel writes n the way ParseSizes reads it (4000000 is "4M").
func SizeLabel(n int) string {
	switch {
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n%1_000 == 0:
		return fmt.Sprintf("%dK", n/1_000)
	}
	return strconv.Itoa(n)
}
