package routing

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

const agentConfigDoc = `apiVersion: crossdock.io/v1
kind: AgentConfig
metadata:
  name: east
spec:
  selector:
    labels: {site: east}
  agent:
    batch: 200
  connectors:
    - name: erp
      builtin: sql
      settings:
        dsn: postgres://crossdock:${env:ERP_PASSWORD}@db/erp
        password: ${file:/etc/crossdock/erp.pw}
`

func TestAgentConfigParse(t *testing.T) {
	d, err := ParseOne([]byte(agentConfigDoc))
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != KindAgentConfig || d.Ref() != "agentconfigs/east" {
		t.Fatalf("parsed %s", d.Ref())
	}
	if got := d.AgentConfig.Selects("a1", map[string]string{"site": "east", "erp": "tryton"}); got != 1 {
		t.Fatalf("Selects by labels = %d, want 1", got)
	}
	if got := d.AgentConfig.Selects("a1", map[string]string{"site": "west"}); got != 0 {
		t.Fatalf("Selects another site = %d, want 0", got)
	}
	y, err := d.AgentConfig.AgentYAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "${env:ERP_PASSWORD}") || !strings.Contains(string(y), "batch: 200") {
		t.Fatalf("agent YAML lost the reference or the setting:\n%s", y)
	}
	// The canonical form parses back to the same content.
	c, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ParseOne(c)
	if err != nil {
		t.Fatalf("canonical form does not parse: %v\n%s", err, c)
	}
	c2, _ := d2.Canonical()
	if string(c) != string(c2) {
		t.Fatalf("canonical form not stable:\n%s\n---\n%s", c, c2)
	}
}

func TestAgentConfigRefused(t *testing.T) {
	for name, tc := range map[string]struct{ old, new, want string }{
		"literal secret": {"password: ${file:/etc/crossdock/erp.pw}", "password: hunter2",
			"agentconfigs/east: spec.connectors[0].settings.password: a literal secret"},
		"password in a URL": {"${env:ERP_PASSWORD}@db", "hunter2@db",
			"agentconfigs/east: spec.connectors[0].settings.dsn: the URL carries a literal password"},
		"host-only setting": {"batch: 200", "data_dir: /tmp/x",
			"agentconfigs/east: spec.agent.data_dir: set on the agent's host only"},
		"connector without type": {"builtin: sql", "sha256: abc",
			"agentconfigs/east: spec.connectors[0]: set builtin"},
		"no selector": {"labels: {site: east}", "{}",
			"agentconfigs/east: spec.selector: required"},
		"bad reference": {"@db/erp", "@db/${vault:x}",
			"agentconfigs/east: spec.connectors[0].settings.dsn: unknown reference"},
	} {
		t.Run(name, func(t *testing.T) {
			doc := strings.Replace(agentConfigDoc, tc.old, tc.new, 1)
			if name == "no selector" {
				doc = strings.Replace(agentConfigDoc, "    labels: {site: east}\n", "", 1)
			}
			_, err := ParseOne([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestFleetDocExamples keeps docs/fleet.md's AgentConfig examples valid.
func TestFleetDocExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatal("docs/fleet.md has no yaml example")
	}
	for i, m := range blocks {
		if _, err := Parse([]byte(m[1])); err != nil {
			t.Errorf("docs/fleet.md yaml block %d: %v", i+1, err)
		}
	}
}
