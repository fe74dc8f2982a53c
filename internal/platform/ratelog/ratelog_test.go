package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterPerKeyWithSuppressedCount(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(3, time.Minute)
	l.SetClock(func() time.Time { return now })
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for i := 0; i < 1000; i++ {
		l.Log(log, slog.LevelWarn, "dest-a", "delivery failed", "i", i)
		if i%10 == 0 {
			l.Log(log, slog.LevelWarn, "dest-b", "delivery failed", "i", i)
		}
		now = now.Add(10 * time.Millisecond) // 10s in all: one window
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines for 1,000+100 failures in one window with a burst of 3 per key, want 6:\n%s", len(lines), buf.String())
	}
	now = now.Add(time.Minute)
	buf.Reset()
	l.Log(log, slog.LevelWarn, "dest-a", "delivery failed", "i", 1000)
	if !strings.Contains(buf.String(), "suppressed=997") {
		t.Errorf("the first line of the next window does not count the 997 suppressed: %s", buf.String())
	}
	buf.Reset()
	l.Log(log, slog.LevelWarn, "dest-a", "delivery failed", "i", 1001)
	if strings.Contains(buf.String(), "suppressed") {
		t.Errorf("the count is repeated on the next line: %s", buf.String())
	}
}

func TestKeys(t *testing.T) {
	got := Keys(map[string]string{"sku": "A-1", "order": "o-1"})
	want := []any{"key.order", "o-1", "key.sku", "A-1"}
	if len(got) != len(want) {
		t.Fatalf("Keys = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Keys = %v, want %v", got, want)
		}
	}
}
