package partner_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// seedEvents are what every test's views hold: committed through raft like an agent's
// batch and folded by each node's real views (controlplane/views).
func seedEvents() []*eventv1.Event {
	level := func(sku, loc, onHand, allocated, available string) *eventv1.Event {
		return &eventv1.Event{Type: "inventory.level", Keys: map[string]string{"sku": sku, "location": loc},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
				Sku: sku, Location: loc, OnHand: onHand, Allocated: allocated, Available: available, UnitOfMeasure: "EA"}}}
	}
	price := func(sku, list, amount string) *eventv1.Event {
		return &eventv1.Event{Type: "price", Keys: map[string]string{"sku": sku, "price_list": list},
			Payload: &eventv1.Event_Price{Price: &eventv1.Price{Sku: sku, PriceList: list, Currency: "EUR", Amount: amount}}}
	}
	item := func(sku, name string) *eventv1.Event {
		return &eventv1.Event{Type: "item", Keys: map[string]string{"sku": sku},
			Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: sku, Name: name}}}
	}
	return []*eventv1.Event{
		level("A-1", "WH-1", "110", "10", "100"),
		level("A-1", "WH-2", "50", "0", "50"),
		level("A-2", "WH-1", "20", "0", "20"),
		level("B-1", "WH-1", "7", "0", "7"),
		price("A-1", "retail", "9.90"),
		price("A-1", "wholesale", "7.50"),
		item("A-1", "Anvil"), item("A-2", "Axe"), item("B-1", "Bolt"),
	}
}

// propose commits evs through the leader as agent "erp" (seqs from e.agentSeq) and
// returns the ledger seq of the last one, as a writer is told.
func (e *env) propose(evs ...*eventv1.Event) uint64 {
	e.t.Helper()
	b := &storev1.IngestBatch{AgentId: "erp"}
	for _, ev := range evs {
		e.agentSeq++
		ev.Id = fmt.Sprintf("erp-%d", e.agentSeq)
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: e.agentSeq, Event: ev})
	}
	leader := e.nodes[0]
	if e.cluster != nil {
		leader = e.cluster.WaitLeader(nil)
	}
	res, err := leader.Store().Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	if err != nil {
		e.t.Fatalf("commit events: %v", err)
	}
	r := res.(*storev1.IngestResult)
	if int(r.GetCommitted()) != len(evs) {
		e.t.Fatalf("committed %d of %d events: %v", r.GetCommitted(), len(evs), r)
	}
	return r.GetLastLedgerSeq()
}

// commit is propose, then waits until every running node's views hold the events.
func (e *env) commit(evs ...*eventv1.Event) uint64 {
	e.t.Helper()
	seq := e.propose(evs...)
	for _, s := range e.nodes {
		if !s.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := s.Views().WaitFor(ctx, seq)
		cancel()
		if err != nil {
			e.t.Fatalf("views of %s at seq %d: %v", s.Config.NodeID, seq, err)
		}
	}
	return seq
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
	t        *testing.T
	nodes    []*controlplanetest.Server
	cluster  *controlplanetest.Cluster
	seq      uint64 // the ledger seq of the last seed event
	agentSeq uint64 // the last agent seq commit used
	admin    partnerv1connect.PartnerAdminServiceClient
	routing  routingv1connect.RoutingServiceClient
	hc       *http.Client // trusts the cluster CA, no credentials
}

func newEnv(t *testing.T, n int, extraDocs string) *env {
	t.Helper()
	return newEnvConfig(t, n, extraDocs, nil)
}

// middayClock is the clock the nodes count quota days by: time passing as it does, from
// noon UTC of today, so that no test's quota day ends while it runs (a run across
// midnight UTC once served 1,425 of a quota of 1,000: the second day's share).
func middayClock() func() time.Time {
	now := time.Now().UTC()
	off := time.Date(now.Year(), now.Month(), now.Day(), 12, 0, 0, 0, time.UTC).Sub(now)
	return func() time.Time { return time.Now().Add(off) }
}

// newEnvConfig is newEnv with more node configuration.
func newEnvConfig(t *testing.T, n int, extraDocs string, more func(c *controlplane.Config)) *env {
	t.Helper()
	e := &env{t: t}
	clock := middayClock()
	cb := func(_ int, c *controlplane.Config) {
		c.PartnerUsageEvery = 200 * time.Millisecond
		c.PartnerQuotaClock = clock
		if more != nil {
			more(c)
		}
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
	e.seq = e.commit(seedEvents()...)
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
