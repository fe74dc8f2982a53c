package ledger

import (
	"strings"
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestSetAgentLabels: labels of an enrolled agent are replaced and move the fleet
// revision; an unknown agent or bad labels change nothing; they survive a snapshot.
func TestSetAgentLabels(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	set := func(agent string, labels map[string]string) *storev1.FleetCommandResult {
		r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_SET_AGENT_LABELS, &storev1.SetAgentLabels{AgentId: agent, Labels: labels, Actor: "enrollment"})).(*storev1.FleetCommandResult)
		return r
	}
	if r := set("x", map[string]string{"site": "east"}); !strings.Contains(r.GetError(), "no such agent") {
		t.Fatalf("labels of an agent not enrolled = %v, want refused", r)
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, &storev1.PutToken{Id: "t1", SecretSha256: []byte("h"), Kind: "agent", AgentName: "x"}))
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{Id: "t1", SecretSha256: []byte("h")}))
	rev0, _ := l.FleetRevision()
	if r := set("x", map[string]string{"site": "east", "erp": "tryton"}); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	if rev, _ := l.FleetRevision(); rev == rev0 {
		t.Fatal("the fleet revision did not move")
	}
	if r := set("x", map[string]string{"Site": "east"}); !strings.Contains(r.GetError(), "label key") {
		t.Fatalf("a bad label key = %v, want refused", r)
	}
	if got, _ := l.LabelsOf("x"); len(got) != 2 || got["erp"] != "tryton" {
		t.Fatalf("labels = %v", got)
	}
	r := testSnapshotRestore(t, l)
	if got, _ := r.AgentLabels(); got["x"]["site"] != "east" {
		t.Fatalf("labels after a snapshot restore = %v", got)
	}
}
