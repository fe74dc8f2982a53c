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
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(Interval) // the polling interval, not a wait for the condition
	}
}
