package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestEventForTestFromEventsLs: routes test given what `events ls -o json` printed. An
// empty listing used to reach the control plane and come back as `unknown field
// "lastSeq"`; now it says there is no event in the file and how to save one.
func TestEventForTestFromEventsLs(t *testing.T) {
	ev := `{"seq":"7","event":{"type":"item","item":{"sku":"A"}}}`
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"an event", `{"item":{"sku":"A"}}`, `{"item":{"sku":"A"}}`, ""},
		{"a committed event", ev, ev, ""},
		{"not JSON", `{"item":`, `{"item":`, ""},
		{"empty listing", `{"lastSeq":"12"}` + "\n", "", "no event in it"},
		{"empty listing with events", `{"events":[],"lastSeq":"12"}`, "", "no event in it"},
		{"one event", `{"events":[` + ev + `],"lastSeq":"12"}`, ev, ""},
		{"several", `{"events":[` + ev + `,` + ev + `],"lastSeq":"12"}`, "", "holds 2 events"},
		{"empty file", " \n", "", "is empty"},
		{"empty ledger", "{}\n", "", "no event"},
	} {
		got, err := eventForTest("ev.json", []byte(tc.in))
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.err)
		case tc.err != "" && !strings.Contains(err.Error(), "crossdock events ls --type TYPE --limit 1 -o json"):
			t.Errorf("%s: error %q does not say how to save an event", tc.name, err)
		}
	}
}

func FuzzEventForTest(f *testing.F) {
	for _, s := range []string{`{"lastSeq":"1"}`, `{"events":[{"seq":"1"}]}`, `{"item":{}}`, `[]`, `null`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := eventForTest("f", []byte(s))
		if err != nil {
			return
		}
		// What is passed on is the input itself or one element of its events list.
		if got != s && !json.Valid([]byte(got)) {
			t.Fatalf("eventForTest(%q) = %q: neither the input nor an event", s, got)
		}
	})
}
