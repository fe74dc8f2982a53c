// Package testutil holds the polling helper every test package uses: tests wait for a
// condition with a deadline, never with a fixed sleep.
package testutil

import (
	"testing"
	"time"
)

// Interval is how often WaitFor checks its condition.
const Interval = 10 * time.Millisecond

// WaitFor polls cond every Interval until it returns true, failing the test after
// timeout with what it was waiting for.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForDetail(t, timeout, Interval, what, func() (bool, string) { return cond(), "" })
}

// WaitForDetail polls cond every interval until it holds; on timeout it fails with what
// it was waiting for and the last detail cond gave (what it saw instead).
func WaitForDetail(t testing.TB, timeout, interval time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if detail != "" {
				t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, detail)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval) // the polling interval, not a wait for the condition
	}
}
