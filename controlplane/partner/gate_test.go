package partner_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

var availability = map[string]any{"skus": []string{"A-1", "A-2", "B-1"}}

// TestRefusals sends every kind of refused call through a real server and checks the
// answer and the audit trail.
func TestRefusals(t *testing.T) {
	e := newEnv(t, 1, "")
	n := e.nodes[0]
	acme := e.key("acme", 0)

	t.Run("no key", func(t *testing.T) {
		res, b := e.post(n, "GetAvailability", "", availability)
		wantRefusal(t, res, b, http.StatusUnauthorized, "unauthenticated", "API key required")
	})
	t.Run("not a key", func(t *testing.T) {
		res, b := e.post(n, "GetAvailability", "Bearer hello", availability)
		wantRefusal(t, res, b, http.StatusUnauthorized, "unauthenticated", "not a Crossdock partner key")
	})
	t.Run("wrong secret", func(t *testing.T) {
		wrong := acme[:len(acme)-4] + "AAAA"
		if wrong == acme {
			wrong = acme[:len(acme)-4] + "BBBB"
		}
		res, b := e.post(n, "GetAvailability", "Bearer "+wrong, availability)
		wantRefusal(t, res, b, http.StatusUnauthorized, "unauthenticated", "not recognised")
	})
	t.Run("missing scope", func(t *testing.T) {
		res, b := e.post(n, "GetPrices", "Bearer "+acme, map[string]any{"skus": []string{"A-1"}})
		wantRefusal(t, res, b, http.StatusForbidden, "permission_denied", "prices:read")
	})
	t.Run("invalid request names the field", func(t *testing.T) {
		res, b := e.post(n, "GetAvailability", "Bearer "+acme, map[string]any{"skus": []string{}})
		ce := wantRefusal(t, res, b, http.StatusBadRequest, "invalid_argument", "skus: 0 entries, want 1 to 10")
		if len(ce.Details) != 1 || !strings.HasSuffix(ce.Details[0].Type, "google.rpc.BadRequest") || !strings.Contains(string(ce.Details[0].Debug), `"field":"skus"`) {
			t.Fatalf("want a BadRequest detail naming skus, got %+v", ce.Details)
		}
		res, b = e.post(n, "GetAvailability", "Bearer "+acme, map[string]any{"skus": []string{"A-1", ""}, "locations": []string{"WH-2"}})
		wantRefusal(t, res, b, http.StatusBadRequest, "invalid_argument", "skus[1]: must be 1 to 128 characters; locations[0]: \"WH-2\" is not one of your locations")
	})
	t.Run("oversized body refused before it is read", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequest(http.MethodPost, "https://"+n.Addr()+"/crossdock.partner.v1.PartnerService/GetAvailability", pr)
		req.ContentLength = 1 << 20
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+acme)
		// The body never comes: only an answer that did not wait for it returns.
		res, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		wantRefusal(t, res, b, http.StatusTooManyRequests, "resource_exhausted", "request of 1048576 bytes is over the 2048 bytes")
	})
	t.Run("expired key", func(t *testing.T) {
		short := e.key("acme", 300*time.Millisecond)
		var b []byte
		var res *http.Response
		controlplanetest.WaitFor(t, 5*time.Second, "the key to expire", func() bool {
			res, b = e.post(n, "GetAvailability", "Bearer "+short, availability)
			return res.StatusCode != http.StatusOK
		})
		wantRefusal(t, res, b, http.StatusUnauthorized, "unauthenticated", "expired at")
	})

	// The refusals of a known partner reach its audit trail through the batched usage.
	want := map[string]bool{"bad_key": true, "scope": true, "invalid": true, "size": true, "expired": true}
	controlplanetest.WaitFor(t, 10*time.Second, "refusals in the audit trail", func() bool {
		res, err := e.admin.DescribePartner(context.Background(), connect.NewRequest(&partnerv1.DescribePartnerRequest{Name: "acme"}))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range res.Msg.GetRecentRefusals() {
			got[r.GetReason()] = true
			if strings.Contains(r.GetKeyId(), "_") || (r.GetKeyId() != "" && len(r.GetKeyId()) != 16) {
				t.Fatalf("refusal key id %q is not a bare key id", r.GetKeyId())
			}
		}
		for r := range want {
			if !got[r] {
				return false
			}
		}
		return res.Msg.GetCallsToday()["GetAvailability invalid_argument"] == 2 && res.Msg.GetCallsToday()["GetPrices permission_denied"] == 1
	})
}

// TestRateLimit: over the partner's burst a call is refused with 429, Retry-After and
// the RateLimit fields; after Retry-After it passes again.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, 1, "")
	n := e.nodes[0]
	slow := "Bearer " + e.key("slow", 0)
	for i := range 2 {
		res, b := e.post(n, "GetAvailability", slow, availability)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("call %d within the burst: %d %s", i, res.StatusCode, b)
		}
		if p := res.Header.Get("RateLimit-Policy"); p != `"burst";q=2;w=1, "daily";q=100000;w=86400` {
			t.Fatalf("RateLimit-Policy %q", p)
		}
		if !strings.Contains(res.Header.Get("RateLimit"), `"daily";r=`) {
			t.Fatalf("RateLimit %q has no daily remaining", res.Header.Get("RateLimit"))
		}
	}
	res, b := e.post(n, "GetAvailability", slow, availability)
	refusedAt := time.Now()
	wantRefusal(t, res, b, http.StatusTooManyRequests, "resource_exhausted", "rate limit: 1 requests per second")
	retry, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || retry != 1 {
		t.Fatalf("Retry-After %q, want 1", res.Header.Get("Retry-After"))
	}
	var passedAt time.Time
	controlplanetest.WaitFor(t, 5*time.Second, "a call after Retry-After", func() bool {
		res, _ := e.post(n, "GetAvailability", slow, availability)
		passedAt = time.Now()
		return res.StatusCode == http.StatusOK
	})
	if d := passedAt.Sub(refusedAt); d > time.Duration(retry)*time.Second+500*time.Millisecond {
		t.Fatalf("passed again %s after the refusal; Retry-After said %ds", d, retry)
	}
	t.Logf("refused, then passed again after %s (Retry-After %ds)", passedAt.Sub(refusedAt), retry)
}

// TestDailyQuota: the quota counts only valid calls; past it the answer is 429.
func TestDailyQuota(t *testing.T) {
	e := newEnv(t, 1, "")
	n := e.nodes[0]
	key := "Bearer " + e.key("metered", 0)
	for range 10 { // refused calls do not consume quota
		if res, _ := e.post(n, "GetAvailability", key, map[string]any{"skus": []string{}}); res.StatusCode != http.StatusBadRequest {
			t.Fatalf("invalid call answered %d", res.StatusCode)
		}
	}
	if ok := serveUpTo(t, e, n, key, 40); ok != 30 {
		t.Fatalf("served %d calls, want exactly the daily quota of 30", ok)
	}
}

// TestDailyQuotaStartsAgainNextDay: a partner refused for its spent quota is served a
// whole quota again once the UTC day the quota counts has changed.
func TestDailyQuotaStartsAgainNextDay(t *testing.T) {
	var ahead atomic.Int64 // how far the nodes' quota clock is ahead of the test's
	e := newEnvConfig(t, 1, "", func(c *controlplane.Config) {
		c.PartnerQuotaClock = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	n := e.nodes[0]
	key := "Bearer " + e.key("metered", 0)
	if ok := serveUpTo(t, e, n, key, 40); ok != 30 {
		t.Fatalf("served %d calls, want exactly the daily quota of 30", ok)
	}
	ahead.Store(int64(24 * time.Hour))
	if ok := serveUpTo(t, e, n, key, 40); ok != 30 {
		t.Fatalf("the next day: served %d calls, want the daily quota of 30 again", ok)
	}
}

// serveUpTo calls GetAvailability on n with key, calls times, and returns how many were
// served; every other answer must be the daily quota's refusal, with Retry-After.
func serveUpTo(t *testing.T, e *env, n *controlplanetest.Server, key string, calls int) int {
	t.Helper()
	ok := 0
	for range calls {
		res, b := e.post(n, "GetAvailability", key, availability)
		if res.StatusCode == http.StatusOK {
			ok++
			continue
		}
		wantRefusal(t, res, b, http.StatusTooManyRequests, "resource_exhausted", "daily quota exhausted")
		if res.Header.Get("Retry-After") == "" {
			t.Fatal("quota refusal without Retry-After")
		}
	}
	return ok
}

// TestSegmentation: each partner sees its SKUs and locations with its allocation rule;
// read methods answer GET too.
func TestSegmentation(t *testing.T) {
	e := newEnv(t, 1, "")
	n := e.nodes[0]
	ctx := context.Background()
	req := &partnerv1.GetAvailabilityRequest{Skus: []string{"A-1", "A-2", "B-1", "Z-9"}}
	got := func(key string) map[string]string {
		res, err := e.client(n, key).GetAvailability(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.GetSeq() < e.seq {
			t.Fatalf("seq %d, want at least the seed's %d", res.Msg.GetSeq(), e.seq)
		}
		m := map[string]string{}
		for _, a := range res.Msg.GetAvailability() {
			m[a.GetSku()+"@"+a.GetLocation()] = a.GetAvailable()
		}
		return m
	}
	acme := e.key("acme", 0)
	// acme: A-* at WH-1 only; 80% never leaving less than 5: 100 -> 80, 20 -> 15.
	if m := got(acme); len(m) != 2 || m["A-1@WH-1"] != "80" || m["A-2@WH-1"] != "15" {
		t.Fatalf("acme sees %v", m)
	}
	globex := e.key("globex", 0)
	if m := got(globex); len(m) != 4 || m["A-1@WH-1"] != "100" || m["A-1@WH-2"] != "50" || m["B-1@WH-1"] != "7" {
		t.Fatalf("globex sees %v", m)
	}
	prices, err := e.client(n, globex).GetPrices(ctx, connect.NewRequest(&partnerv1.GetPricesRequest{Skus: []string{"A-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	if p := prices.Msg.GetPrices(); len(p) != 1 || p[0].GetPriceList() != "wholesale" || p[0].GetAmount() != "7.50" {
		t.Fatalf("globex prices %v", p)
	}
	items, err := e.client(n, acme).ListItems(ctx, connect.NewRequest(&partnerv1.ListItemsRequest{PageSize: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if it := items.Msg.GetItems(); len(it) != 1 || it[0].GetSku() != "A-1" || items.Msg.GetNextPageToken() != "A-1" {
		t.Fatalf("acme items page 1: %v next %q", it, items.Msg.GetNextPageToken())
	}
	items, err = e.client(n, acme).ListItems(ctx, connect.NewRequest(&partnerv1.ListItemsRequest{PageSize: 1, PageToken: "A-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if it := items.Msg.GetItems(); len(it) != 1 || it[0].GetSku() != "A-2" {
		t.Fatalf("acme items page 2 (B-1 is not its SKU): %v", it)
	}

	// GET, as curl would send it.
	msg, _ := protojson.Marshal(&partnerv1.GetAvailabilityRequest{Skus: []string{"A-1"}})
	u := "https://" + n.Addr() + "/crossdock.partner.v1.PartnerService/GetAvailability?encoding=json&message=" + url.QueryEscape(string(msg))
	hreq, _ := http.NewRequest(http.MethodGet, u, nil)
	hreq.Header.Set("Authorization", "Bearer "+acme)
	res, err := e.hc.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var out partnerv1.GetAvailabilityResponse
	if res.StatusCode != http.StatusOK || protojson.Unmarshal(b, &out) != nil || len(out.GetAvailability()) != 1 || out.GetAvailability()[0].GetAvailable() != "80" {
		t.Fatalf("GET: %d %s", res.StatusCode, b)
	}

	// min_seq beyond the views: the call waits, then says so.
	n.Partner().MinSeqWait = 200 * time.Millisecond
	ahead := e.seq + 1000
	_, err = e.client(n, acme).GetAvailability(ctx, connect.NewRequest(&partnerv1.GetAvailabilityRequest{Skus: []string{"A-1"}, MinSeq: ahead}))
	if want := fmt.Sprintf("not yet min_seq %d", ahead); connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), want) {
		t.Fatalf("min_seq %d: %v", ahead, err)
	}
}

// TestOpenAPIServed: the contract is served without credentials.
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t, 1, "")
	res, err := e.hc.Get("https://" + e.nodes[0].Addr() + "/openapi/partner.v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(b), "/crossdock.partner.v1.PartnerService/GetAvailability") {
		t.Fatalf("GET /openapi/partner.v1.yaml: %d %.200s", res.StatusCode, b)
	}
}

// TestStreamWithPartnerKey: the partner event stream takes a partner key whose partner
// holds events:read and lists the destination; other keys are refused.
func TestStreamWithPartnerKey(t *testing.T) {
	e := newEnv(t, 1, `---
apiVersion: crossdock.io/v1
kind: Destination
metadata:
  name: streamer-feed
spec:
  type: stream
  partner: streamer
---
apiVersion: crossdock.io/v1
kind: Route
metadata:
  name: streamer-levels
spec:
  match:
    types: [inventory.level]
  destination: streamer-feed
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: streamer
spec:
  tier: standard
  scopes: [events:read]
  skus: ["*"]
  destinations: [streamer-feed]
`)
	n := e.nodes[0]
	subscribe := func(key string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		c := deliveryv1connect.NewPartnerServiceClient(&http.Client{Transport: bearer{key, e.hc.Transport}}, "https://"+n.Addr())
		s, err := c.Subscribe(ctx, connect.NewRequest(&deliveryv1.SubscribeRequest{Destination: "streamer-feed"}))
		if err != nil {
			return err
		}
		defer s.Close()
		for s.Receive() {
		}
		return s.Err()
	}
	if err := subscribe(e.key("streamer", 0)); connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("streamer's key: %v, want the stream to stay open until the deadline", err)
	}
	if err := subscribe(e.key("globex", 0)); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("globex's key (no events:read): %v", err)
	}
}
