package delivery

import (
	"math/rand/v2"
	"time"

	"github.com/crossdock/crossdock/controlplane/routing"
)

// tokenBucket is a rate limiter: rate tokens per second, at most burst saved up.
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

func (b *tokenBucket) refill(now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(b.burst, b.tokens+el*b.rate)
		b.last = now
	}
}

// take spends a token if one is available; otherwise it says how long until one is.
// A nil bucket never limits.
func (b *tokenBucket) take(now time.Time) (ok bool, wait time.Duration) {
	if b == nil {
		return true, 0
	}
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// Breaker states, as shown in status.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// breaker is a circuit breaker over consecutive failures. While open no request is
// sent; after the cooldown one probe goes through (half-open): success closes it, a
// failure opens it again.
type breaker struct {
	threshold int
	cooldown  time.Duration
	failures  int
	state     string
	openUntil time.Time
	probing   bool
}

func newBreaker(threshold int, cooldown time.Duration) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, state: BreakerClosed}
}

// allow reports whether a request may be sent now; when not, until when to wait.
func (b *breaker) allow(now time.Time) (bool, time.Time) {
	switch b.state {
	case BreakerOpen:
		if now.Before(b.openUntil) {
			return false, b.openUntil
		}
		b.state = BreakerHalfOpen
		fallthrough
	case BreakerHalfOpen:
		if b.probing {
			return false, now.Add(b.cooldown)
		}
		b.probing = true
	}
	return true, time.Time{}
}

func (b *breaker) success() {
	b.failures, b.state, b.probing = 0, BreakerClosed, false
}

func (b *breaker) failure(now time.Time) {
	b.failures++
	b.probing = false
	if b.state == BreakerHalfOpen || b.failures >= b.threshold {
		b.state, b.openUntil = BreakerOpen, now.Add(b.cooldown)
	}
}

// neutral ends a probe that said nothing about the destination's health (a 429).
func (b *breaker) neutral() { b.probing = false }

// backoff is the delay before retry n (1 = the first retry): InitialBackoff doubled
// per attempt up to MaxBackoff, drawn uniformly from its upper half (jitter).
func backoff(p routing.Policy, n int) time.Duration {
	d := p.InitialBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}
