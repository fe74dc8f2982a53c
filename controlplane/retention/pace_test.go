package retention

import (
	"testing"
	"time"
)

// TestPace: Run spreads an interval's prune steps (and batches archived ahead) evenly
// over the time it is given, at most maxPace apart, and not at all when there is one
// step or no time to spread over.
func TestPace(t *testing.T) {
	for _, c := range []struct {
		n      uint64
		per    int
		spread time.Duration
		want   time.Duration
	}{
		{150_000, 2_500, 15 * time.Second, 250 * time.Millisecond}, // 60 steps in 15 s
		{150_001, 2_500, 15 * time.Second, 15 * time.Second / 61},
		{2_500, 2_500, 15 * time.Second, 0},            // one step
		{0, 2_500, 15 * time.Second, 0},                // nothing
		{150_000, 2_500, 0, 0},                         // Once: back to back
		{5_000, 2_500, 15 * time.Second, maxPace},      // two steps: capped
		{10_000_000, 2_500, 15 * time.Second, 3750000}, // far behind: 3.75 ms apart
	} {
		if got := pace(c.n, c.per, c.spread); got != c.want {
			t.Errorf("pace(%d, %d, %s) = %s, want %s", c.n, c.per, c.spread, got, c.want)
		}
	}
}

// TestStepSize: steps keep their configured size while they can come minStepGap apart
// or more, grow when retention is further behind than that, up to maxStepFactor times,
// and Once (no spread) keeps the configured size.
func TestStepSize(t *testing.T) {
	for _, c := range []struct {
		n      uint64
		per    int
		spread time.Duration
		want   int
	}{
		{150_000, 2_500, 15 * time.Second, 2_500},          // steady: 60 steps in 15 s
		{750_000, 2_500, 15 * time.Second, 2_500},          // 300 steps, 50 ms apart
		{1_500_000, 2_500, 15 * time.Second, 5_000},        // twice that: twice the size
		{1_500_001, 2_500, 15 * time.Second, 5_001},        // rounded up
		{10_000_000, 2_500, 15 * time.Second, 10_000},      // far behind: capped
		{10_000_000, 2_500, 0, 2_500},                      // Once: back to back
		{10_000_000, 2_500, 40 * time.Millisecond, 10_000}, // no room at all: capped
	} {
		if got := stepSize(c.n, c.per, c.spread); got != c.want {
			t.Errorf("stepSize(%d, %d, %s) = %d, want %d", c.n, c.per, c.spread, got, c.want)
		}
	}
}
