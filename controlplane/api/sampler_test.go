package api

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lines keeps every record's message and its "key" attribute.
type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "key" {
			s += " key=" + a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, s)
	return nil
}
func (l *lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lines) WithGroup(string) slog.Handler      { return l }

func TestLogSamplerSuppressesRepeats(t *testing.T) {
	out := &lines{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &LogSampler{Logger: slog.New(out), Burst: 2, Interval: time.Minute, Now: func() time.Time { return now }}
	ctx := context.Background()
	for range 10 {
		s.Log(ctx, slog.LevelWarn, "a", "refused a")
	}
	s.Log(ctx, slog.LevelWarn, "b", "refused b")
	want := []string{"refused a", "refused a", "refused b"}
	if strings.Join(out.got, "|") != strings.Join(want, "|") {
		t.Fatalf("within the interval: got %q, want %q", out.got, want)
	}
	// The next interval: the count of what was held back comes first, for a; b held
	// nothing back and says nothing.
	now = now.Add(time.Minute)
	s.Log(ctx, slog.LevelWarn, "a", "refused a")
	want = append(want, "suppressed 8 similar messages key=a", "refused a")
	if strings.Join(out.got, "|") != strings.Join(want, "|") {
		t.Fatalf("next interval: got %q, want %q", out.got, want)
	}
	// A key that went quiet is reported when any later message sweeps it.
	for range 5 {
		s.Log(ctx, slog.LevelWarn, "a", "refused a")
	}
	now = now.Add(2 * time.Minute)
	s.Log(ctx, slog.LevelWarn, "c", "refused c")
	want = append(want, "refused a", "suppressed 4 similar messages key=a", "refused c")
	if strings.Join(out.got, "|") != strings.Join(want, "|") {
		t.Fatalf("sweep: got %q, want %q", out.got, want)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5000":             "192.0.2.7",
		"[::ffff:192.0.2.7]:5000":    "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:1":   "2001:db8:1:2::/64",
		"not an address":             "not an address",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddrLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newAddrLimiter(0.5, 2)
	for i := range 2 {
		if ok, _ := l.allow("x", now); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	ok, retry := l.allow("x", now)
	if ok || retry != 2*time.Second {
		t.Fatalf("3rd attempt: ok %v retry %s, want refused with retry 2s", ok, retry)
	}
	if ok, _ := l.allow("y", now); !ok {
		t.Fatal("another key shares x's bucket")
	}
	if ok, _ := l.allow("x", now.Add(2*time.Second)); !ok {
		t.Fatal("x refused after the refill")
	}
	if ok, _ := newAddrLimiter(-1, 0).allow("x", now); !ok {
		t.Fatal("a negative rate must turn the limit off")
	}
}

func TestErrorLogKey(t *testing.T) {
	for in, want := range map[string]string{
		"http: TLS handshake error from 192.0.2.7:5000: EOF":                       "192.0.2.7 http: TLS handshake error",
		"http: TLS handshake error from [2001:db8::1]:443: remote error: bad cert": "2001:db8::/64 http: TLS handshake error",
		"http: Accept error: too many open files; retrying in 5ms":                 "http: Accept error: too many open files; retrying in 5ms",
	} {
		if got := errorLogKey(in); got != want {
			t.Errorf("errorLogKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzErrorLogKey: any line the HTTP server logs (its text carries the caller's address)
// gives a key without panicking, and lines naming a source are keyed by its address.
func FuzzErrorLogKey(f *testing.F) {
	f.Add("http: TLS handshake error from 192.0.2.7:5000: EOF")
	f.Add("http: TLS handshake error from [::1]:1: x")
	f.Add("http: superfluous response.WriteHeader call")
	f.Fuzz(func(t *testing.T, line string) {
		key := errorLogKey(line)
		if prefix, rest, ok := strings.Cut(line, " from "); ok {
			addr, _, _ := strings.Cut(rest, ": ")
			if key != sourceKey(addr)+" "+prefix {
				t.Fatalf("errorLogKey(%q) = %q", line, key)
			}
		} else if key != line {
			t.Fatalf("errorLogKey(%q) = %q, want the line", line, key)
		}
	})
}
