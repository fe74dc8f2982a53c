package main

import (
	"testing"
	"time"
)

func TestParseReplayFrom(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if seq, at, err := parseReplayFrom("5000", now); err != nil || seq != 5000 || at != nil {
		t.Fatalf("seq: %d %v %v", seq, at, err)
	}
	if _, at, err := parseReplayFrom("2026-11-27T08:00:00Z", now); err != nil || !at.AsTime().Equal(now.Add(-2*time.Hour)) {
		t.Fatalf("time: %v %v", at, err)
	}
	if _, at, err := parseReplayFrom("90m", now); err != nil || !at.AsTime().Equal(now.Add(-90*time.Minute)) {
		t.Fatalf("duration: %v %v", at, err)
	}
	for _, bad := range []string{"", "0", "-2h", "yesterday", "2026-11-27"} {
		if _, _, err := parseReplayFrom(bad, now); err == nil {
			t.Errorf("parseReplayFrom(%q) accepted", bad)
		}
	}
}

func FuzzParseReplayFrom(f *testing.F) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		seq, at, err := parseReplayFrom(s, now)
		if err == nil && (seq == 0) == (at == nil) {
			t.Fatalf("parseReplayFrom(%q) = seq %d, time %v: want exactly one", s, seq, at)
		}
		// Only an explicit time may lie in the future; a duration always goes back.
		if _, perr := time.Parse(time.RFC3339, s); err == nil && at != nil && perr != nil && !at.AsTime().Before(now) {
			t.Fatalf("parseReplayFrom(%q) does not go back in time: %v", s, at.AsTime())
		}
	})
}
