package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
)

// The console logs in named credentials (docs/fleet.md) with their role: a viewer reads
// the pages but its dead letter retry is refused (the API's rule: retry needs
// operator), an operator's goes through, and both are in the audit trail under the
// credential's name.
func TestConsoleRetryNeedsOperator(t *testing.T) {
	f := newFixture(t)
	hc, base, closeFn, err := f.cc.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	access := adminv1connect.NewAccessServiceClient(hc, base)
	token := func(name, role string) string {
		res, err := access.CreateCredential(context.Background(), connect.NewRequest(&adminv1.CreateCredentialRequest{Name: name, Role: role}))
		if err != nil {
			t.Fatalf("create %s credential: %v", role, err)
		}
		return res.Msg.GetToken()
	}
	viewer, operator := token("vera", "viewer"), token("otto", "operator")
	dlID := f.openDeadLetter(t)
	f.recv.accept.Store(true)

	c := browserless(t, f.cc.CAPEM)
	ui := "https://" + f.srv.Addr()
	retry := func(tok string) string {
		t.Helper()
		ck := login(t, c, ui, tok)
		p := do(t, c, http.MethodGet, ui+"/ui/destinations/shop", nil, withCookie(ck))
		m := csrfRE.FindStringSubmatch(p.body)
		if p.status != http.StatusOK || m == nil || !strings.Contains(p.body, dlID) {
			t.Fatalf("destination page: %d, csrf %v, dead letter shown %v", p.status, m, strings.Contains(p.body, dlID))
		}
		p = do(t, c, http.MethodPost, ui+"/ui/deadletters/retry", url.Values{"id": {dlID}, "destination": {"shop"}, "csrf": {m[1]}}, withCookie(ck))
		if p.status != http.StatusSeeOther {
			t.Fatalf("retry: %d, want 303 back to the destination", p.status)
		}
		loc, err := url.Parse(p.location)
		if err != nil {
			t.Fatal(err)
		}
		return loc.Query().Get("retried")
	}
	if got := retry(viewer); !strings.Contains(got, "needs the operator role") || !strings.Contains(got, `"vera" is viewer`) {
		t.Fatalf("viewer's retry: %q, want refused for its role", got)
	}
	dl, err := f.dlq.ListDeadLetters(context.Background(), connect.NewRequest(&deliveryv1.ListDeadLettersRequest{Destination: "shop"}))
	if err != nil || len(dl.Msg.GetDeadLetters()) != 1 || dl.Msg.GetDeadLetters()[0].GetState() != deliveryv1.DeadLetterState_DEAD_LETTER_STATE_OPEN {
		t.Fatalf("after the viewer's retry: %v %v, want the dead letter still open", dl, err)
	}
	if got := retry(operator); got != "ok" {
		t.Fatalf("operator's retry: %q, want ok", got)
	}
	audit := func(actor, outcome string) bool {
		res, err := access.ListAudit(context.Background(), connect.NewRequest(&adminv1.ListAuditRequest{Actor: actor, Kind: "RetryDeadLetters"}))
		if err != nil {
			t.Fatalf("audit: %v", err)
		}
		for _, r := range res.Msg.GetEntries() {
			if r.GetOutcome() == outcome {
				return true
			}
		}
		return false
	}
	testutil.WaitFor(t, 10*time.Second, "the viewer's refused retry in the audit trail", func() bool { return audit("vera", "permission_denied") })
	testutil.WaitFor(t, 10*time.Second, "the operator's retry in the audit trail", func() bool { return audit("otto", "ok") })
}
