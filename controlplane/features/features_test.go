package features

import (
	"slices"
	"testing"
)

// TestMissing: a node counts as applying a feature only with a report that names it in
// the asking leader's term; the leader itself always does; a later report replaces an
// earlier one, so a node that stops naming the feature is missing again.
func TestMissing(t *testing.T) {
	var r Reports
	servers := []string{"n3", "n1", "n2", "n4"}
	check := func(term uint64, want ...string) {
		t.Helper()
		if got := r.Missing("n1", servers, term, CompactListed); !slices.Equal(got, want) {
			t.Fatalf("term %d: missing %v, want %v", term, got, want)
		}
	}
	check(5, "n2", "n3", "n4") // nothing reported yet; n1 is the leader

	r.Record("n2", Build(), 5)
	r.Record("n3", nil, 5)                        // a build before the feature
	r.Record("n4", []string{"something.else"}, 5) // another feature only
	check(5, "n3", "n4")

	r.Record("n3", Build(), 5)
	r.Record("n4", append([]string{"something.else"}, Build()...), 5)
	check(5)

	// A new term: reports from the last leadership do not count.
	check(6, "n2", "n3", "n4")
	r.Record("n2", Build(), 6)
	r.Record("n3", Build(), 6)
	r.Record("n4", Build(), 6)
	check(6)

	// n3 goes back to a build that sends no features.
	r.Record("n3", nil, 6)
	check(6, "n3")

	// Every feature asked for must be reported.
	if got := r.Missing("n1", servers, 6, CompactListed, "something.else"); !slices.Equal(got, []string{"n2", "n3", "n4"}) {
		t.Fatalf("missing %v for two features only n2-n4 lack one of, want [n2 n3 n4]", got)
	}

	// The record does not alias the caller's slice.
	f := Build()
	r.Record("n3", f, 6)
	f[0] = "changed"
	check(6)
}
