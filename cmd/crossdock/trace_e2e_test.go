package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestTraceCLI runs `crossdock trace` (the built binary) against a real node holding
// events of two SKUs: the table, --limit with JSON output, and a malformed key.
func TestTraceCLI(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	batch := &storev1.IngestBatch{AgentId: "erp-trace"}
	for i, sku := range []string{"A-100", "B-200", "A-100"} {
		batch.Events = append(batch.Events, &storev1.AgentEvent{AgentSeq: uint64(i + 1), Event: &eventv1.Event{
			Id: "ev_trace_" + string(rune('a'+i)), Type: "inventory.level", Keys: map[string]string{"sku": sku},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: "1", Available: "1"}},
		}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, batch); err != nil {
		t.Fatal(err)
	}
	cfg := srv.AdminConfigPath()
	out, err := run(t, "trace", "sku=A-100", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "inventory.level  sku=A-100") != 2 || !strings.Contains(out, "id ev_trace_a") || !strings.Contains(out, "id ev_trace_c") || strings.Contains(out, "B-200") {
		t.Errorf("trace sku=A-100:\n%s", out)
	}
	out, err = run(t, "trace", "sku=A-100", "--limit", "1", "-o", "json", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Events []struct {
			ID  string `json:"id"`
			Seq string `json:"seq"`
		} `json:"events"`
		Truncated bool   `json:"truncated"`
		Node      string `json:"node"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("trace -o json: %v\n%s", err, out)
	}
	if len(res.Events) != 1 || res.Events[0].ID != "ev_trace_c" || !res.Truncated || res.Node != srv.Config.NodeID {
		t.Errorf("trace --limit 1: %+v, want the newest event and truncated", res)
	}
	if _, err := run(t, "trace", "sku", "--config", cfg); err == nil || !strings.Contains(err.Error(), "want name=value") {
		t.Errorf("trace sku: %v, want a name=value error", err)
	}
}
