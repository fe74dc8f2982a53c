package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestAgentMetricsDocumented checks docs/operations.md's agent metrics table against
// the agent collector's descriptions, both ways (connector metrics only appear in a
// scrape with connectors configured, so the descriptions are the reference).
func TestAgentMetricsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(crossdock_agent_[a-z_]+)`").FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	ch := make(chan *prometheus.Desc, 64)
	(&agentCollector{}).Describe(ch)
	close(ch)
	described := map[string]bool{}
	name := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := name.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		described[m[1]] = true
		if !documented[m[1]] {
			t.Errorf("%s is not documented in docs/operations.md's agent metrics table", m[1])
		}
	}
	for n := range documented {
		if !described[n] {
			t.Errorf("docs/operations.md documents %s but the agent does not export it", n)
		}
	}
	if len(described) < 10 {
		t.Errorf("the agent describes only %d metrics", len(described))
	}
}
