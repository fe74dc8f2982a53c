package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// TestAccessRoles checks each role through the CLI of the built binary against a real
// server: what viewer, operator and admin credentials may and may not do, revocation and
// expiry, the credential's name in the history, and the audit trail holding every
// mutation of the test (allowed and refused).
func TestAccessRoles(t *testing.T) {
	c := startServer(t)
	as := func(token string, args ...string) (string, error) {
		t.Helper()
		a := append([]string{"--config", c.config}, args...)
		if token != "" {
			a = append(a, "--token", token)
		}
		return run(t, a...)
	}
	create := func(name, role string, extra ...string) string {
		t.Helper()
		out, err := as("", append([]string{"access", "tokens", "create", name, "--role", role}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	refused := func(err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want a refusal saying %q", err, want)
		}
	}
	viewer, operator, admin := create("vera", "viewer"), create("otto", "operator"), create("ada", "admin")
	doc := filepath.Join(t.TempDir(), "east.yaml")
	if err := os.WriteFile(doc, []byte(fleetConfigDoc("{sku: SKU-C}")), 0o600); err != nil {
		t.Fatal(err)
	}

	// viewer: reads, nothing else.
	if _, err := as(viewer, "agents", "ls"); err != nil {
		t.Fatalf("viewer agents ls: %v", err)
	}
	if _, err := as(viewer, "access", "tokens", "ls"); err != nil {
		t.Fatalf("viewer access tokens ls: %v", err)
	}
	_, err := as(viewer, "apply", "-f", doc)
	refused(err, `ApplyDocuments needs the operator role; credential "vera" is viewer`)
	_, err = as(viewer, "token", "create")
	refused(err, "CreateToken needs the admin role")

	// operator: applies routing, not tokens or credentials.
	if _, err := as(operator, "apply", "-f", doc); err != nil {
		t.Fatalf("operator apply: %v", err)
	}
	_, err = as(operator, "token", "create")
	refused(err, `CreateToken needs the admin role; credential "otto" is operator`)
	_, err = as(operator, "access", "tokens", "create", "mallory", "--role", "admin")
	refused(err, "CreateCredential needs the admin role")

	// admin: tokens and credentials.
	if _, err := as(admin, "token", "create"); err != nil {
		t.Fatalf("admin token create: %v", err)
	}
	if _, err := as(admin, "access", "tokens", "revoke", "vera"); err != nil {
		t.Fatal(err)
	}
	_, err = as(viewer, "agents", "ls")
	refused(err, `credential "vera" was revoked`)

	// Expiry.
	short := create("sam", "viewer", "--ttl", "1s")
	controlplanetest.WaitFor(t, 10*time.Second, "the short credential to expire", func() bool {
		_, err := as(short, "agents", "ls")
		return err != nil && strings.Contains(err.Error(), `credential "sam" expired`)
	})

	// The history names the credential.
	hist, err := as(viewer2(t, create), "history", "agentconfig", "east")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(hist, "\n"); len(lines) < 2 || !strings.Contains(lines[1], "otto") || !strings.Contains(lines[1], "apply") {
		t.Errorf("history does not name the credential:\n%s", hist)
	}

	// The audit trail: every mutation above, allowed or refused, with its actor.
	out, err := as("", "audit", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res adminv1.ListAuditResponse
	if err := protojson.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("audit ls -o json: %v\n%s", err, out)
	}
	var got []string
	for _, e := range res.GetEntries() {
		got = append(got, e.GetActor()+" "+e.GetProcedure()[strings.LastIndex(e.GetProcedure(), "/")+1:]+" "+e.GetOutcome())
	}
	want := []string{
		"bootstrap CreateCredential ok", "bootstrap CreateCredential ok", "bootstrap CreateCredential ok",
		"vera ApplyDocuments permission_denied", "vera CreateToken permission_denied",
		"otto ApplyDocuments ok", "otto CreateToken permission_denied", "otto CreateCredential permission_denied",
		"ada CreateToken ok", "ada RevokeCredential ok",
		"bootstrap CreateCredential ok", // sam
		"bootstrap CreateCredential ok", // vic, for the history read
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out, err = as("", "audit", "ls", "--actor", "otto")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "otto") != 3 || strings.Contains(out, "vera") {
		t.Errorf("audit ls --actor otto:\n%s", out)
	}
}

// viewer2 makes a fresh viewer credential (vera's was revoked).
func viewer2(t *testing.T, create func(name, role string, extra ...string) string) string {
	t.Helper()
	return create("vic", "viewer")
}
