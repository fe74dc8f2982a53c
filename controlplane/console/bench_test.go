package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

const (
	benchAgents       = 1000
	benchDestinations = 200
	benchEventsPer    = 5 // events per agent: 5,000 in the ledger
)

// BenchmarkConsolePages measures each console page, over HTTPS with the admin token,
// on a real node holding 1,000 agents (each with committed events, through raft) and
// 200 webhook destinations with a route each taking the 100 events of one SKU (running
// workers; half deliver to a loopback receiver, half to one answering 503, so they lag
// with retries and open breakers). It reports the page's size; the time per op is one full
// request: TLS connection reused, page read, rendered and sent.
//
//	go test -run '^$' -bench ConsolePages -benchtime 50x ./controlplane/console/
func BenchmarkConsolePages(b *testing.B) {
	srv := controlplanetest.TestServer(b, func(c *controlplane.Config) {
		c.WebhookAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	b.Cleanup(sink.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	b.Cleanup(down.Close)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		b.Fatal(err)
	}
	hc, base, closeFn, err := cc.HTTPClient()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(closeFn)
	var docs strings.Builder
	for i := range benchDestinations {
		url := sink.URL
		if i%2 == 1 {
			url = down.URL // half the destinations fail: lag, retries, open breakers
		}
		fmt.Fprintf(&docs, `apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: shop-%03d}
spec: {type: webhook, url: %q, secret: %q}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: route-%03d}
spec:
  destination: shop-%03d
  match: {types: [inventory.level], keys: {sku: SKU-7}}
  mapping: |
    {"sku": event.inventory_level.sku}
---
`, i, url, fixtureSecret, i, i)
	}
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(context.Background(),
		connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs.String()})); err != nil {
		b.Fatalf("apply %d destinations: %v", benchDestinations, err)
	}
	// 1,000 agents, each with a batch of events committed through raft.
	var wg sync.WaitGroup
	errs := make(chan error, benchAgents)
	sem := make(chan struct{}, 16)
	for a := range benchAgents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			batch := &storev1.IngestBatch{AgentId: fmt.Sprintf("agent-%04d", a)}
			for e := range benchEventsPer {
				sku := fmt.Sprintf("SKU-%d", (a*benchEventsPer+e)%50)
				batch.Events = append(batch.Events, &storev1.AgentEvent{AgentSeq: uint64(e + 1), Event: &eventv1.Event{
					Id: fmt.Sprintf("ev_bench_%d_%d", a, e), Type: "inventory.level", Keys: map[string]string{"sku": sku},
					Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: sku, Location: "WH1", OnHand: "1", Available: "1"}},
				}})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := srv.Store().Propose(ctx, storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, batch); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("ingest: %v", err)
	}
	if n, err := srv.Store().Ledger().Agents(); err != nil || len(n) < benchAgents {
		b.Fatalf("agents in the ledger: %d (%v), want %d", len(n), err, benchAgents)
	}

	client := browserless(b, cc.CAPEM)
	get := func(b *testing.B, path, want string) int {
		req, _ := http.NewRequest(http.MethodGet, "https://"+srv.Addr()+path, nil)
		req.Header.Set("Authorization", "Bearer "+cc.Token)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			b.Fatalf("GET %s: %d %v, want 200 with %q", path, resp.StatusCode, err, want)
		}
		return len(body)
	}
	for _, p := range []struct{ name, path, want string }{
		{"fleet", "/ui/fleet", "agent-0999"},
		{"destinations", "/ui/destinations", "shop-199"},
		{"destination", "/ui/destinations/shop-100", "Dead letters"},
		{"partners", "/ui/partners", "Partners"},
		{"alerts", "/ui/alerts", `id="alerts"`},
		{"search", "/ui/search?q=sku%3DSKU-7", "20 events with sku=SKU-7"},
		{"search-100", "/ui/search?q=sku%3DSKU-7&limit=100", "100 events with sku=SKU-7"},
	} {
		b.Run(p.name, func(b *testing.B) {
			size := get(b, p.path, p.want)
			b.ResetTimer()
			for b.Loop() {
				get(b, p.path, p.want)
			}
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
	}
}
