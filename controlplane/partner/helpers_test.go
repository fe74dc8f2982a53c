package partner_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/partner"
	"github.com/crossdock/crossdock/internal/cliconfig"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// fakeViews is a test fake of the views package's Reader (controlplane/views is built
// by another branch): fixed levels, prices and items at a fixed seq.
type fakeViews struct {
	mu     sync.Mutex
	seq    uint64
	levels []partner.Level
	prices []partner.PriceEntry
	items  []partner.ItemEntry
}

func (f *fakeViews) Seq() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.seq }

func (f *fakeViews) WaitFor(ctx context.Context, seq uint64) error {
	for f.Seq() < seq {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func (f *fakeViews) Levels(skus, locations []string) []partner.Level {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []partner.Level
	for _, l := range f.levels {
		if slices.Contains(skus, l.SKU) && (locations == nil || slices.Contains(locations, l.Location)) {
			out = append(out, l)
		}
	}
	return out
}

func (f *fakeViews) Prices(skus []string, list string) []partner.PriceEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []partner.PriceEntry
	for _, p := range f.prices {
		if slices.Contains(skus, p.SKU) && p.PriceList == list {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeViews) Items(after string, limit int, match func(string) bool) ([]partner.ItemEntry, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []partner.ItemEntry
	for _, it := range f.items { // sorted by SKU
		if it.SKU <= after || !match(it.SKU) {
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].SKU
		}
		out = append(out, it)
	}
	return out, ""
}

func newFakeViews() *fakeViews {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	return &fakeViews{
		seq: 42,
		levels: []partner.Level{
			{SKU: "A-1", Location: "WH-1", OnHand: "110", Allocated: "10", Available: "100", UnitOfMeasure: "EA", Seq: 40, At: at},
			{SKU: "A-1", Location: "WH-2", Available: "50", UnitOfMeasure: "EA", Seq: 41, At: at},
			{SKU: "A-2", Location: "WH-1", Available: "20", UnitOfMeasure: "EA", Seq: 41, At: at},
			{SKU: "B-1", Location: "WH-1", Available: "7", UnitOfMeasure: "EA", Seq: 42, At: at},
		},
		prices: []partner.PriceEntry{
			{SKU: "A-1", PriceList: "retail", Currency: "EUR", Amount: "9.90", Seq: 30},
			{SKU: "A-1", PriceList: "wholesale", Currency: "EUR", Amount: "7.50", Seq: 31},
		},
		items: []partner.ItemEntry{{SKU: "A-1", Name: "Anvil"}, {SKU: "A-2", Name: "Axe"}, {SKU: "B-1", Name: "Bolt"}},
	}
}

// docs: tier "standard"; acme sees A-* at WH-1 with 80% / safety 5; globex sees
// everything, holds prices:read too; slow has 1 request/s with bursts of 2; metered has
// a daily quota of 30.
const docs = `apiVersion: crossdock.io/v1
kind: Tier
metadata:
  name: standard
spec:
  requestsPerSecond: 10000
  burst: 10000
  dailyQuota: 100000
  maxBodyBytes: 2048
  maxItemsPerCall: 10
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: acme
spec:
  displayName: Acme Market
  tier: standard
  scopes: [availability:read]
  locations: [WH-1]
  skus: ["A-*"]
  priceList: retail
  allocation:
    percent: 80
    safetyStock: 5
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: globex
spec:
  tier: standard
  scopes: [availability:read, prices:read]
  skus: ["*"]
  priceList: wholesale
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: slow
spec:
  tier: standard
  scopes: [availability:read]
  skus: ["*"]
  limits:
    requestsPerSecond: 1
    burst: 2
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: metered
spec:
  tier: standard
  scopes: [availability:read]
  skus: ["*"]
  limits:
    dailyQuota: 30
`

type env struct {
	t       *testing.T
	nodes   []*controlplanetest.Server
	cluster *controlplanetest.Cluster
	views   *fakeViews
	admin   partnerv1connect.PartnerAdminServiceClient
	routing routingv1connect.RoutingServiceClient
	hc      *http.Client // trusts the cluster CA, no credentials
}

func newEnv(t *testing.T, n int, extraDocs string) *env {
	t.Helper()
	e := &env{t: t, views: newFakeViews()}
	cb := func(_ int, c *controlplane.Config) {
		c.PartnerViews = e.views
		c.PartnerUsageEvery = 200 * time.Millisecond
	}
	if n == 1 {
		e.nodes = []*controlplanetest.Server{controlplanetest.TestServer(t, func(c *controlplane.Config) { cb(0, c) })}
	} else {
		e.cluster = controlplanetest.TestCluster(t, n, cb)
		e.nodes = e.cluster.Nodes
	}
	cfg, err := cliconfig.Load(e.nodes[0].AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addrs = nil
	for _, s := range e.nodes[1:] {
		cfg.Addrs = append(cfg.Addrs, s.Addr())
	}
	hc, base, closeFn, err := cfg.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	e.admin = partnerv1connect.NewPartnerAdminServiceClient(hc, base)
	e.routing = routingv1connect.NewRoutingServiceClient(hc, base)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true, MaxConnsPerHost: 0}
	t.Cleanup(tr.CloseIdleConnections)
	e.hc = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	if _, err := e.routing.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs + extraDocs})); err != nil {
		t.Fatalf("apply partner documents: %v", err)
	}
	// Every node has applied the documents before a test calls it.
	controlplanetest.WaitFor(t, 10*time.Second, "documents on every node", func() bool {
		for _, s := range e.nodes {
			if _, ok, _ := s.Store().Ledger().Document("Partner", "metered"); !ok {
				return false
			}
		}
		return true
	})
	return e
}

// key creates a key for partner (expiresIn 0: none).
func (e *env) key(partnerName string, expiresIn time.Duration) string {
	e.t.Helper()
	req := &partnerv1.CreateKeyRequest{Partner: partnerName}
	if expiresIn > 0 {
		req.ExpiresIn = durationpb.New(expiresIn)
	}
	res, err := e.admin.CreateKey(context.Background(), connect.NewRequest(req))
	if err != nil {
		e.t.Fatalf("create key for %s: %v", partnerName, err)
	}
	e.waitKey(res.Msg.GetInfo().GetId())
	return res.Msg.GetKey()
}

// waitKey waits until every running node has applied the key's entry.
func (e *env) waitKey(id string) {
	e.t.Helper()
	controlplanetest.WaitFor(e.t, 10*time.Second, "key on every node", func() bool {
		for _, s := range e.nodes {
			if !s.Running() {
				continue
			}
			if _, ok, _ := s.Store().Ledger().PartnerKey(id); !ok {
				return false
			}
		}
		return true
	})
}

// client is a Connect client of one node's partner API with a key.
func (e *env) client(node *controlplanetest.Server, key string) partnerv1connect.PartnerServiceClient {
	return partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: bearer{key, e.hc.Transport}, Timeout: 20 * time.Second}, "https://"+node.Addr())
}

type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.key != "" {
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return b.next.RoundTrip(r)
}

// post sends a JSON body to a method of node's partner API with an Authorization
// header (none when empty) and returns the answer.
func (e *env) post(node *controlplanetest.Server, method, auth string, body any) (*http.Response, []byte) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, "https://"+node.Addr()+"/crossdock.partner.v1.PartnerService/"+method, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s: %v", method, err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res, out
}

// connectErr is the JSON error of the Connect protocol.
type connectErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type  string          `json:"type"`
		Debug json.RawMessage `json:"debug"`
	} `json:"details"`
}

func decodeErr(t *testing.T, b []byte) connectErr {
	t.Helper()
	var ce connectErr
	if err := json.Unmarshal(b, &ce); err != nil {
		t.Fatalf("not a Connect error: %s", b)
	}
	return ce
}

func wantRefusal(t *testing.T, res *http.Response, body []byte, status int, code, msgPart string) connectErr {
	t.Helper()
	ce := decodeErr(t, body)
	if res.StatusCode != status || ce.Code != code || !strings.Contains(ce.Message, msgPart) {
		t.Fatalf("got %d %s %q, want %d %s containing %q", res.StatusCode, ce.Code, ce.Message, status, code, msgPart)
	}
	return ce
}
