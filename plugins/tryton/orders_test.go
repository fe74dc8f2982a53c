package tryton_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// partnerOrderDocs route partners' orders (not the ERP's own sale events, which carry
// no partner) to the agent's Tryton connector.
const partnerOrderDocs = `
apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: erp-test}
spec: {requestsPerSecond: 100, burst: 100, dailyQuota: 10000, maxBodyBytes: 65536, maxItemsPerCall: 10}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec:
  tier: erp-test
  scopes: [orders:write, orders:read]
  skus: ["*"]
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: tryton-orders}
spec: {type: agent, agent: erp-orders-agent, connector: erp}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: partner-orders-to-tryton}
spec:
  match: {types: [order]}
  filter: event.order.partner != ""
  destinations: [tryton-orders]
`

// partnerClient is a partner API client of srv with a new key of partner.
func partnerClient(t *testing.T, srv *controlplanetest.Server, partner string) partnerv1connect.PartnerServiceClient {
	t.Helper()
	cfg, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := cfg.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	var key string
	testutil.WaitFor(t, 10*time.Second, "a key for partner "+partner, func() bool {
		res, err := partnerv1connect.NewPartnerAdminServiceClient(hc, base).CreateKey(context.Background(),
			connect.NewRequest(&partnerv1.CreateKeyRequest{Partner: partner}))
		if err == nil {
			key = res.Msg.GetKey()
		}
		return err == nil
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: bearer{key, tr}, Timeout: 20 * time.Second}, "https://"+srv.Addr())
}

type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}

// testPartnerOrders: the whole loop through a real control plane, a real agent running
// the connector as a plugin process, and real Tryton. A partner's order submitted with
// its key (SubmitOrder) is routed to the agent's Tryton sink, becomes a confirmed sale (read back
// through Tryton's own RPC) and an order.ack "accepted" with Tryton's number; an order
// for a product Tryton does not know becomes an order.ack "rejected" with Tryton's
// reason; the sale's shipment, done in Tryton, comes back as a shipment event keyed by
// the Crossdock order id, and so do the sale's state changes.
func testPartnerOrders(t *testing.T, e *erp) {
	bin, sum := buildPlugin(t)
	srv := controlplanetest.TestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	settings := e.settings(`,"inventory":false,"confirm_partners":["acme"],"invoice_method":"manual"`)
	a, err := agent.New(ctx, agent.Config{DataDir: t.TempDir(), Servers: []string{srv.Addr()},
		EnrollToken: srv.Token(t, time.Minute, "erp-orders-agent"), LocalAddr: "-", Logger: controlplanetest.Logger(t),
		PluginMinBackoff: 50 * time.Millisecond, PluginMaxBackoff: time.Second,
		Connectors: []pluginhost.Connector{{Name: "erp", Path: bin, SHA256: sum, Settings: settings}}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	applyDocs(t, srv.AdminConfigPath(), partnerOrderDocs)

	p := e.product(t, "PO-SKU-1")
	e.party(t, "acme")
	e.move(t, p, e.supplier, e.storage, 10)
	goodID, badID := canonical.OrderID("acme", "PO-1"), canonical.OrderID("acme", "PO-2")
	// The partner submits its orders with its key (SubmitOrder). SubmitOrder takes SKUs
	// Crossdock knows: the catalogue's items are published first; NOT-IN-TRYTON is one
	// Crossdock knows and Tryton does not.
	items := []*eventv1.Event{
		{Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "PO-SKU-1", Name: "Product PO-SKU-1"}}},
		{Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: "NOT-IN-TRYTON", Name: "Not in Tryton"}}},
	}
	if _, err := a.Publish(ctx, "catalogue", items); err != nil {
		t.Fatal(err)
	}
	pc := partnerClient(t, srv, "acme")
	submit := func(po, sku, qty string) {
		t.Helper()
		req := &partnerv1.SubmitOrderRequest{PurchaseOrderNumber: po, Currency: "EUR",
			Lines: []*partnerv1.OrderLine{{LineNumber: "1", Sku: sku, Quantity: qty, UnitPrice: "9.50"}}}
		var last error
		testutil.WaitFor(t, 30*time.Second, "SubmitOrder "+po+" received", func() bool {
			res, err := pc.SubmitOrder(ctx, connect.NewRequest(req))
			last = err
			return err == nil && res.Msg.GetStatus() == "received"
		})
		_ = last
	}
	submit("PO-1", "PO-SKU-1", "3")
	submit("PO-2", "NOT-IN-TRYTON", "1")

	l := srv.Store().Ledger()
	ack := func(id string) *eventv1.CommittedEvent {
		var got *eventv1.CommittedEvent
		testutil.WaitFor(t, 90*time.Second, "order.ack for "+id, func() bool {
			evs, _, err := l.ListEvents(ledger.Filter{Type: "order.ack", Keys: map[string]string{"order": id}}, 1, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > 1 {
				t.Fatalf("%d acks for %s", len(evs), id)
			}
			if len(evs) == 1 {
				got = evs[0]
			}
			return got != nil
		})
		return got
	}
	acc := ack(goodID)
	if acc.Event.Id != canonical.OrderAckEventID(goodID) || acc.Event.GetOrderAck().GetStatus() != "accepted" ||
		acc.Event.GetOrderAck().GetErpOrderNumber() == "" || acc.Event.GetOrderAck().GetPurchaseOrderNumber() != "PO-1" {
		t.Fatalf("ack for the good order: %v", acc)
	}
	number := acc.Event.GetOrderAck().GetErpOrderNumber()
	status := func(po, want string) *partnerv1.Order {
		t.Helper()
		var o *partnerv1.Order
		testutil.WaitFor(t, 30*time.Second, "GetOrder "+po+" status "+want, func() bool {
			res, err := pc.GetOrder(ctx, connect.NewRequest(&partnerv1.GetOrderRequest{PurchaseOrderNumber: po}))
			if err != nil {
				t.Fatalf("GetOrder %s: %v", po, err)
			}
			o = res.Msg.GetOrder()
			return o.GetStatus() == want
		})
		return o
	}
	if o := status("PO-1", "accepted"); o.GetErpOrderNumber() != number {
		t.Fatalf("GetOrder PO-1: ERP number %q, want Tryton's %q", o.GetErpOrderNumber(), number)
	}
	var sales []struct {
		ID        int64   `json:"id"`
		Number    string  `json:"number"`
		State     string  `json:"state"`
		Reference string  `json:"reference"`
		Shipments []int64 `json:"shipments"`
	}
	e.Into(t, &sales, "sale.sale", "search_read", []any{[]any{"reference", "=", goodID}}, 0, nil, nil,
		[]string{"number", "state", "reference", "shipments"})
	if len(sales) != 1 || sales[0].Number != number || (sales[0].State != "confirmed" && sales[0].State != "processing") {
		t.Fatalf("sales in Tryton for %s: %+v, want one confirmed with number %s", goodID, sales, number)
	}
	if len(sales[0].Shipments) != 1 {
		t.Fatalf("the confirmed sale has shipments %v, want one (Tryton processed it)", sales[0].Shipments)
	}

	rej := ack(badID)
	if a := rej.Event.GetOrderAck(); a.GetStatus() != "rejected" || !strings.Contains(a.GetMessage(), `Tryton has no product with code "NOT-IN-TRYTON"`) ||
		strings.Contains(a.GetMessage(), "permanent error") {
		t.Fatalf("ack for the bad order: %v", rej)
	}
	if o := status("PO-2", "rejected"); !strings.Contains(o.GetMessage(), "NOT-IN-TRYTON") {
		t.Fatalf("GetOrder PO-2: message %q does not give Tryton's reason", o.GetMessage())
	}

	// The warehouse ships the sale in Tryton.
	sh := sales[0].Shipments
	e.Model(t, "stock.shipment.out", "assign_force", sh)
	e.Model(t, "stock.shipment.out", "pick", sh)
	e.Model(t, "stock.shipment.out", "pack", sh)
	e.Model(t, "stock.shipment.out", "done", sh)
	var shs []struct {
		State string `json:"state"`
	}
	e.Into(t, &shs, "stock.shipment.out", "read", sh, []string{"state"})
	if len(shs) != 1 || shs[0].State != "done" {
		t.Fatalf("shipment %v after assign, pick, pack, done: %+v", sh, shs)
	}
	var shipped *eventv1.CommittedEvent
	testutil.WaitFor(t, 60*time.Second, "a shipment event keyed by order "+goodID, func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "shipment", Keys: map[string]string{"order": goodID}}, 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			shipped = evs[0]
		}
		return shipped != nil
	})
	s := shipped.Event.GetShipment()
	if s.GetOrderNumber() != goodID || s.GetStatus() != "shipped" || shipped.Event.Keys["erp_order"] != number ||
		len(s.GetLines()) != 1 || s.GetLines()[0].GetSku() != "PO-SKU-1" || s.GetLines()[0].GetQuantity() != "3" || s.GetShippedAt() == nil {
		t.Fatalf("shipment event %v", shipped)
	}
	status("PO-1", "shipped")
	// The sale's own state changes join the order too.
	testutil.WaitFor(t, 30*time.Second, "the sale's state changes keyed by order "+goodID, func() bool {
		evs, _, err := l.ListEvents(ledger.Filter{Type: "order", Keys: map[string]string{"order": goodID}}, 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ce := range evs {
			if o := ce.Event.GetOrder(); ce.Event.Source.GetConnector() == "erp" && o.GetOrderNumber() == number &&
				(o.GetStatus() == "processing" || o.GetStatus() == "done") {
				return true
			}
		}
		return false
	})
}

// applyDocs applies routing documents the way `crossdock apply` does.
func applyDocs(t *testing.T, adminConfig, src string) {
	t.Helper()
	c, err := cliconfig.Load(adminConfig)
	if err != nil {
		t.Fatal(err)
	}
	hc, base, closeFn, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	rc := routingv1connect.NewRoutingServiceClient(hc, base)
	if _, err := rc.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: src})); err != nil {
		t.Fatalf("apply: %v", err)
	}
}
