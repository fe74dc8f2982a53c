package sdk

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The plugin logger writes what go-plugin's host parses as structured records: hclog's
// key names, lower-case levels and its exact timestamp layout.
func TestLoggerSpeaksHclogJSON(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	old := stderr
	stderr = f
	defer func() { stderr = old }()
	t.Setenv(LogLevelEnv, "debug")
	Logger().Debug("polling", "table", "stock", "rows", 3)
	Logger().Warn("slow")
	f.Close()
	b, _ := os.ReadFile(f.Name())
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), b)
	}
	var rec map[string]any
	if err := json.Unmarshal(lines[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec["@level"] != "debug" || rec["@message"] != "polling" || rec["table"] != "stock" || rec["rows"] != float64(3) {
		t.Errorf("record %v", rec)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", rec["@timestamp"].(string)); err != nil {
		t.Errorf("timestamp: %v", err)
	}
	if err := json.Unmarshal(lines[1], &rec); err != nil || rec["@level"] != "warn" {
		t.Errorf("second record %v, %v", rec, err)
	}
}
