package delivery

import (
	"testing"
	"time"
)

// The attempt log keeps the last Size entries: older ones are overwritten, Find
// returns what is held oldest first, and Stats names the oldest held.
func TestAttemptLogBounded(t *testing.T) {
	l := NewAttemptLog(4)
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	if total, oldest := l.Stats(); total != 0 || !oldest.IsZero() {
		t.Fatalf("empty log: %d, %v", total, oldest)
	}
	for i := range 6 {
		l.recordSend("shop", []*item{{seq: uint64(i + 1), route: "r"}}, attemptResult{outcome: outcomeOK, status: 200}, t0.Add(time.Duration(i)*time.Second))
	}
	total, oldest := l.Stats()
	if total != 6 || !oldest.Equal(t0.Add(2*time.Second)) {
		t.Errorf("stats %d, %v; want 6 added, the oldest held the third", total, oldest)
	}
	got := l.Find(map[uint64]bool{1: true, 2: true, 3: true, 6: true})
	if len(got) != 2 || got[0].Seq != 3 || got[1].Seq != 6 || got[0].Outcome != "ok" || got[0].Number != 1 {
		t.Errorf("find: %+v, want seqs 3 and 6 (1 and 2 overwritten)", got)
	}
	l.recordDead("shop", []*item{{seq: 7, route: "r"}}, []string{"dl_7"}, "HTTP 422", t0.Add(10*time.Second))
	if got := l.Find(map[uint64]bool{7: true}); len(got) != 1 || got[0].Kind != "dead_letter" || got[0].DeadLetterID != "dl_7" {
		t.Errorf("dead letter entry: %+v", got)
	}
	if NewAttemptLog(0).Size() != DefaultAttemptLogSize {
		t.Error("size 0 is not the default")
	}
}
