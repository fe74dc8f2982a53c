package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crossdock/crossdock/agent"
)

// Values in the agent config file fill what flags (and their environment variables) did
// not set explicitly; explicit flags and variables win.
func TestAgentFileAndFlagPrecedence(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	doc := `agent:
  name: from-file
  data_dir: /file/data
  servers: ["file:1"]
  quota: 2GiB
  batch: 100
  no_quic: true
connectors:
  - name: counter
    builtin: example
    source: false
    settings: {sku: A}
`
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CROSSDOCK_SERVERS", "env:1")
	t.Setenv("CROSSDOCK_AGENT_DATA_DIR", "")
	cmd := newAgentCmd()
	if err := cmd.ParseFlags([]string{"--data-dir", "/flag/data", "--window", "4"}); err != nil {
		t.Fatal(err)
	}
	// What the flags hold after parsing, as RunE would see it.
	cfg := agent.Config{DataDir: "/flag/data", Servers: []string{"env:1"}, Window: 4, BatchMaxEvents: 500}
	quota, mem := "1GiB", "40MiB"
	if err := applyAgentFile(cmd, p, &cfg, &quota, &mem); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/flag/data" || strings.Join(cfg.Servers, ",") != "env:1" || cfg.Window != 4 {
		t.Errorf("explicit flags or variables lost: %+v", cfg)
	}
	if cfg.Name != "from-file" || quota != "2147483648" || cfg.BatchMaxEvents != 100 || !cfg.DisableQUIC || mem != "40MiB" {
		t.Errorf("file values not applied: %+v quota %s", cfg, quota)
	}
	if len(cfg.Connectors) != 1 || cfg.Connectors[0].Builtin != "example" || !cfg.Connectors[0].NoSource || string(cfg.Connectors[0].Settings) != `{"sku":"A"}` {
		t.Errorf("connectors %+v", cfg.Connectors)
	}
}
