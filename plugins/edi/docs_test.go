package edi

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDocSettingsExample: the connector settings shown in docs/edi.md configure (with
// state_dir moved to a temporary directory and secrets left as written).
func TestDocSettingsExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/edi.md")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if !strings.HasPrefix(m[1], "connectors:") {
			continue
		}
		found = true
		var doc struct {
			Connectors []struct {
				Builtin  string         `json:"builtin"`
				Settings map[string]any `json:"settings"`
			} `json:"connectors"`
		}
		if err := yaml.Unmarshal([]byte(m[1]), &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Connectors) != 1 || doc.Connectors[0].Builtin != "edi" {
			t.Fatalf("example %+v", doc)
		}
		s := doc.Connectors[0].Settings
		s["state_dir"] = t.TempDir()
		raw, _ := json.Marshal(s)
		c := New(slog.New(slog.DiscardHandler))
		if err := c.Configure(context.Background(), raw); err != nil {
			t.Fatalf("docs/edi.md settings: %v", err)
		}
		c.Close()
	}
	if !found {
		t.Fatal("no connector settings example in docs/edi.md")
	}
}
