// Package ratelog rate-limits log lines per key (a destination, a partner, a
// connector), so a dead partner or a stalled connector cannot flood the log: each key
// may write Burst lines per Every; the lines beyond are counted, and the first line
// let through after them says how many were suppressed ("suppressed" attribute).
package ratelog

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Defaults: 5 lines per key per minute.
const (
	DefaultBurst = 5
	DefaultEvery = time.Minute
)

// maxKeys bounds the keys remembered; past it the oldest windows are forgotten (a key
// forgotten starts afresh, so the bound costs at most a few extra lines).
const maxKeys = 4096

// Limiter decides which lines to write. The zero value is not usable: use New.
type Limiter struct {
	burst int
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*window
}

type window struct {
	start      time.Time
	lines      int // written in this window
	suppressed int // not written since the last line that was
}

// New returns a Limiter of burst lines per key per every (the defaults when zero).
func New(burst int, every time.Duration) *Limiter {
	if burst <= 0 {
		burst = DefaultBurst
	}
	if every <= 0 {
		every = DefaultEvery
	}
	return &Limiter{burst: burst, every: every, now: time.Now, keys: map[string]*window{}}
}

// SetClock replaces the limiter's clock (tests).
func (l *Limiter) SetClock(now func() time.Time) { l.now = now }

// Allow reports whether a line for key may be written now and, when it may, how many
// lines for key were suppressed before it (to be logged with it).
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	if w == nil {
		if len(l.keys) >= maxKeys {
			for k, o := range l.keys { // forget the windows that ended
				if now.Sub(o.start) >= l.every {
					delete(l.keys, k)
				}
			}
			if len(l.keys) >= maxKeys {
				clear(l.keys)
			}
		}
		w = &window{start: now}
		l.keys[key] = w
	}
	if now.Sub(w.start) >= l.every {
		w.start, w.lines = now, 0
	}
	if w.lines >= l.burst {
		w.suppressed++
		return false, 0
	}
	w.lines++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}

// Log writes the line to log at level unless key is over its rate; a line that follows
// suppressed ones carries "suppressed" (their count) and "suppressed_per" (the window).
func (l *Limiter) Log(log *slog.Logger, level slog.Level, key, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	ok, n := l.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n, "suppressed_per", l.every.String())
	}
	log.Log(context.Background(), level, msg, args...)
}

// Keys returns slog arguments for business keys, each as "key.<name>" (sku, order,
// partner ...), in a stable order.
func Keys(keys map[string]string) []any {
	if len(keys) == 0 {
		return nil
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]any, 0, 2*len(names))
	for _, k := range names {
		out = append(out, "key."+k, keys[k])
	}
	return out
}
