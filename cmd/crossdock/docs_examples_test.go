package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestConnectorsDocEventExamples keeps docs/connectors.md's event examples publishable:
// every ```json block is a JSON-lines file that crossdock publish reads (readEvents)
// without an error, one event per non-blank line; an example wrapped over two lines
// fails here.
func TestConnectorsDocEventExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/connectors.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatal("docs/connectors.md has no ```json event example")
	}
	for i, m := range blocks {
		evs, errs := readEvents(strings.NewReader(m[1]))
		for _, err := range errs {
			t.Errorf("docs/connectors.md json block %d: %v", i+1, err)
		}
		lines := 0
		for _, l := range strings.Split(m[1], "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines++
			}
		}
		if len(evs) != lines {
			t.Errorf("docs/connectors.md json block %d: %d events from %d lines", i+1, len(evs), lines)
		}
	}
}
