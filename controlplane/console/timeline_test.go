package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
)

func getTimeline(t *testing.T, f *fixture, keys map[string]string) *adminv1.GetTimelineResponse {
	t.Helper()
	res, err := f.timeline.GetTimeline(context.Background(), connect.NewRequest(&adminv1.GetTimelineRequest{Keys: keys}))
	if err != nil {
		t.Fatalf("GetTimeline(%v): %v", keys, err)
	}
	return res.Msg
}

func stepKinds(d *adminv1.TimelineDelivery) string {
	var out []string
	for _, s := range d.GetSteps() {
		out = append(out, s.GetKind()+":"+s.GetOutcome())
	}
	return strings.Join(out, " ")
}

// TestTimeline follows business keys through a real node, agent and webhook receiver:
// the events of a SKU with their attempts (a 503 then a 200), the lag of each step
// from the commit, a dead letter and its retry through the DLQ API.
func TestTimeline(t *testing.T) {
	f := newFixture(t)

	tl := getTimeline(t, f, map[string]string{"sku": "A-100"})
	if len(tl.GetEvents()) != 2 {
		t.Fatalf("sku=A-100: %d events, want 2: %v", len(tl.GetEvents()), tl)
	}
	if tl.GetAttemptsNode() != f.srv.Config.NodeID || !tl.GetLeader() || tl.GetAttemptsSince() == nil {
		t.Errorf("attempts node %q leader %v since %v, want this node's log", tl.GetAttemptsNode(), tl.GetLeader(), tl.GetAttemptsSince())
	}
	first := tl.GetEvents()[0]
	if first.GetSeq() >= tl.GetEvents()[1].GetSeq() || first.GetKeys()["sku"] != "A-100" || first.GetCommittedAt() == nil {
		t.Errorf("events not oldest first or missing fields: %v", tl.GetEvents())
	}
	if len(first.GetDeliveries()) != 1 {
		t.Fatalf("first A-100 event: deliveries %v, want one to shop", first.GetDeliveries())
	}
	d := first.GetDeliveries()[0]
	if d.GetDestination() != "shop" || d.GetRoute() != "shop-stock" || d.GetState() != "delivered" {
		t.Errorf("delivery %v, want shop via shop-stock delivered", d)
	}
	if got := stepKinds(d); got != "attempt:retry attempt:ok" {
		t.Errorf("steps %q, want a retried attempt then an ok one", got)
	}
	if s := d.GetSteps(); len(s) == 2 {
		if s[0].GetHttpStatus() != http.StatusServiceUnavailable || s[0].GetAttempt() != 1 || s[1].GetAttempt() != 2 || s[1].GetHttpStatus() != http.StatusOK {
			t.Errorf("attempt steps %v, want #1 HTTP 503 and #2 HTTP 200", s)
		}
		if s[0].GetLagMicros() <= 0 || s[1].GetLagMicros() < s[0].GetLagMicros() || d.GetLagMicros() != s[1].GetLagMicros() {
			t.Errorf("lags: steps %d, %d; delivery %d: want positive, growing, the delivery's the last attempt's", s[0].GetLagMicros(), s[1].GetLagMicros(), d.GetLagMicros())
		}
	}
	if second := tl.GetEvents()[1].GetDeliveries(); len(second) != 1 || second[0].GetState() != "delivered" || stepKinds(second[0]) != "attempt:ok" {
		t.Errorf("second A-100 event: %v, want delivered at the first attempt", second)
	}

	// A key pair narrows; a key nobody carries gives nothing.
	if n := len(getTimeline(t, f, map[string]string{"sku": "A-100", "location": "WH1"}).GetEvents()); n != 2 {
		t.Errorf("sku=A-100 location=WH1: %d events, want 2", n)
	}
	if n := len(getTimeline(t, f, map[string]string{"sku": "NOPE"}).GetEvents()); n != 0 {
		t.Errorf("sku=NOPE: %d events, want 0", n)
	}

	// The refused SKU: a permanent refusal, then its dead letter.
	bad := getTimeline(t, f, map[string]string{"sku": "BAD-1"})
	if len(bad.GetEvents()) != 1 || len(bad.GetEvents()[0].GetDeliveries()) != 1 {
		t.Fatalf("sku=BAD-1: %v, want one event with one delivery", bad)
	}
	bd := bad.GetEvents()[0].GetDeliveries()[0]
	dlID := f.openDeadLetter(t)
	if bd.GetState() != "dead_lettered" || bd.GetDeadLetterId() != dlID || stepKinds(bd) != "attempt:permanent dead_letter:" {
		t.Errorf("BAD-1 delivery %v (steps %q), want dead_lettered %s after a permanent attempt", bd, stepKinds(bd), dlID)
	}

	// Retry it through the DLQ API once the receiver accepts it: the timeline shows the
	// retry request and the delivery.
	f.recv.accept.Store(true)
	if _, err := f.dlq.RetryDeadLetters(context.Background(), connect.NewRequest(&deliveryv1.RetryDeadLettersRequest{Id: dlID})); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "the retried dead letter to show delivered in the timeline", func() bool {
		d := getTimeline(t, f, map[string]string{"sku": "BAD-1"}).GetEvents()[0].GetDeliveries()[0]
		return d.GetState() == "delivered" && strings.HasSuffix(stepKinds(d), "attempt:ok retry_delivered:delivered")
	})

	// Refusals: no keys, no token.
	if _, err := f.timeline.GetTimeline(context.Background(), connect.NewRequest(&adminv1.GetTimelineRequest{})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("no keys: %v, want invalid argument", err)
	}
	hc, base, closeFn, err := (&cliconfig.Config{Addr: f.cc.Addr, CAPEM: f.cc.CAPEM}).HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	_, err = adminv1connect.NewTimelineServiceClient(hc, base).GetTimeline(context.Background(),
		connect.NewRequest(&adminv1.GetTimelineRequest{Keys: map[string]string{"sku": "A-100"}}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("no token: %v, want unauthenticated", err)
	}
}
