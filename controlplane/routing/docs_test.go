package routing

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsExamples keeps docs/routing.md honest: every YAML example parses, and every
// mapping and filter snippet compiles.
func TestDocsExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d yaml blocks in docs/routing.md", len(blocks))
	}
	for i, m := range blocks {
		body := m[1]
		switch {
		case strings.Contains(body, "kind: Route            # Destination"):
			continue // the header sketch
		case strings.Contains(body, "apiVersion:"):
			if _, err := Parse([]byte(body)); err != nil {
				t.Errorf("yaml block %d does not parse: %v", i, err)
			}
		default:
			for _, snippet := range strings.Split(body, "\n\n") {
				doc := "apiVersion: crossdock.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n  " +
					strings.ReplaceAll(strings.TrimSpace(snippet), "\n", "\n  ") + "\n  destination: d\n"
				if _, err := ParseOne([]byte(doc)); err != nil {
					t.Errorf("snippet in yaml block %d does not compile: %v\n%s", i, err, snippet)
				}
			}
		}
	}
}
