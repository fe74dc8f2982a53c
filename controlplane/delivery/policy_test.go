package delivery

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/routing"
)

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(2, 3, t0)
	for i := range 3 {
		if ok, _ := b.take(t0); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := b.take(t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th take = %v, %s; want refused, 500ms", ok, wait)
	}
	if ok, _ := b.take(t0.Add(500 * time.Millisecond)); !ok {
		t.Fatal("token after 500ms at 2/s refused")
	}
	// Idle time never saves more than the burst.
	late := t0.Add(time.Hour)
	for i := range 3 {
		if ok, _ := b.take(late); !ok {
			t.Fatalf("token %d after idle refused", i)
		}
	}
	if ok, _ := b.take(late); ok {
		t.Fatal("idle bucket gave more than its burst")
	}
	var unlimited *tokenBucket
	if ok, _ := unlimited.take(t0); !ok {
		t.Fatal("a nil bucket limited")
	}
}

func TestBreaker(t *testing.T) {
	b := newBreaker(3, time.Second)
	for range 3 {
		if ok, _ := b.allow(t0); !ok {
			t.Fatal("closed breaker refused")
		}
		b.failure(t0)
	}
	if ok, until := b.allow(t0.Add(500 * time.Millisecond)); ok || !until.Equal(t0.Add(time.Second)) || b.state != BreakerOpen {
		t.Fatalf("after 3 failures: allow %v until %v state %s", ok, until, b.state)
	}
	now := t0.Add(time.Second)
	if ok, _ := b.allow(now); !ok || b.state != BreakerHalfOpen {
		t.Fatalf("after cooldown: allow %v state %s, want one probe", ok, b.state)
	}
	if ok, _ := b.allow(now); ok {
		t.Fatal("second request while the probe is out")
	}
	b.failure(now)
	if b.state != BreakerOpen {
		t.Fatalf("failed probe left state %s", b.state)
	}
	now = now.Add(time.Second)
	b.allow(now)
	b.success()
	if ok, _ := b.allow(now); !ok || b.state != BreakerClosed {
		t.Fatalf("successful probe: state %s", b.state)
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	p := routing.Policy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: time.Second} {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := backoff(p, n)
			if d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", n, d, full/2, full)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("backoff(%d) has no jitter: %v", n, seen)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {" 0 ", 0}, {"-5", 0}, {"soon", 0},
		{t0.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{t0.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"99999999999", maxRetryAfter},
	} {
		if got := parseRetryAfter(tc.in, t0); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseSecretAndSign(t *testing.T) {
	for _, bad := range []string{"", "abc", "whsec_", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
		}
	}
	key, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	// The Standard Webhooks specification's test vector.
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want the spec's %s", got, want)
	}
	if !strings.HasPrefix(got, "v1,") {
		t.Fatal("no version prefix")
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		d := parseRetryAfter(s, t0)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %s, outside [0, %s]", s, d, maxRetryAfter)
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParseSecret(s)
		if err == nil && len(key) < 16 {
			t.Fatalf("ParseSecret(%q) accepted a %d-byte key", s, len(key))
		}
	})
}

// TestEngineDefaultsAreRoutingDefaults pins the one policy model: a destination whose
// policy leaves everything out is sent under routing.DefaultPolicy (the documented
// defaults), and a plan built from documents carries the routing policy unchanged.
func TestEngineDefaultsAreRoutingDefaults(t *testing.T) {
	if got := policyOf(Destination{}).Policy; !reflect.DeepEqual(got, routing.DefaultPolicy) {
		t.Errorf("engine default policy = %+v, want routing.DefaultPolicy %+v", got, routing.DefaultPolicy)
	}
	p := policyOf(Destination{})
	if p.Concurrency != DefaultConcurrency || p.Window != DefaultWindow {
		t.Errorf("engine limits = %d, %d; want %d, %d", p.Concurrency, p.Window, DefaultConcurrency, DefaultWindow)
	}
	docs, err := routing.Parse([]byte(`apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: slow}
spec:
  retry: {maxAttempts: 3, initialBackoff: 2s}
  circuitBreaker: {failureThreshold: 7}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: d}
spec: {type: stream, partner: p, policy: slow}
`))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := routing.NewTable(docs, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := PlanFromTable(tbl)
	want := routing.DefaultPolicy
	want.Name, want.MaxAttempts, want.InitialBackoff, want.FailureThreshold = "slow", 3, 2*time.Second, 7
	if got := policyOf(plan.Destinations[0]).Policy; !reflect.DeepEqual(got, want) {
		t.Errorf("policy from documents = %+v, want %+v", got, want)
	}
}
