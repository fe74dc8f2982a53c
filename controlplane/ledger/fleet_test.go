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

// TestAdminCredentials: a live name is unique, revocation ends it (and frees the name),
// audit records get consecutive indexes.
func TestAdminCredentials(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	hash := make([]byte, 32)
	put := func(id, name, role string) *storev1.FleetCommandResult {
		r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_CREDENTIAL, &storev1.PutAdminCredential{Credential: &storev1.AdminCredential{
			Id: id, Name: name, Role: role, SecretSha256: hash, ExpiresAt: ts(at(1000)),
		}})).(*storev1.FleetCommandResult)
		return r
	}
	if r := put("c1", "alice", "operator"); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	if r := put("c2", "alice", "viewer"); !strings.Contains(r.GetError(), "named \"alice\" already") {
		t.Fatalf("a second live alice = %v, want refused", r)
	}
	if r := put("c3", "bob", "root"); !strings.Contains(r.GetError(), "not viewer, operator or admin") {
		t.Fatalf("role root = %v, want refused", r)
	}
	r, _ := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_REVOKE_ADMIN_CREDENTIAL, &storev1.RevokeAdminCredential{Name: "alice"})).(*storev1.FleetCommandResult)
	if r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	if c, _, _ := l.AdminCredential("c1"); !c.GetRevoked() {
		t.Fatal("alice not revoked")
	}
	if r := put("c4", "alice", "viewer"); r.GetError() != "" {
		t.Fatalf("a new alice after revocation: %v", r.GetError())
	}
	for _, p := range []string{"/a/One", "/a/Two"} {
		lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_RECORD_AUDIT, &storev1.RecordAudit{Record: &storev1.AuditRecord{Actor: "alice", Procedure: p, Outcome: "ok"}}))
	}
	recs, err := l.Audit(func(*storev1.AuditRecord) bool { return true })
	if err != nil || len(recs) != 2 || recs[0].GetIndex() != 1 || recs[1].GetProcedure() != "/a/Two" || recs[0].GetAt() == nil {
		t.Fatalf("audit = %v, %v", recs, err)
	}
	back := testSnapshotRestore(t, l)
	if recs, _ := back.Audit(func(*storev1.AuditRecord) bool { return true }); len(recs) != 2 {
		t.Fatalf("audit after a snapshot restore: %d records", len(recs))
	}
}
