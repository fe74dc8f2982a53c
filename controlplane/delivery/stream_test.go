package delivery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
)

// The partner stream sends a stream destination's mapped events, follows new commits,
// resumes after a cursor, and refuses a caller without the destination's secret or an
// admin token.
func TestPartnerStreamResumes(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "partner-feed", Kind: delivery.KindStream, Secret: testSecret}},
		Routes:       []delivery.Route{stockRoute("feed", "partner-feed")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, AddressPolicy: allowLoopback(t)})
	mux := http.NewServeMux()
	mux.Handle(deliveryv1connect.NewPartnerServiceHandler(&api.Partner{Backend: &api.Backend{Store: srv.Store(), Logger: controlplanetest.Logger(t)}, Engine: e}))
	url := startHTTP(t, mux)
	client := deliveryv1connect.NewPartnerServiceClient(http.DefaultClient, url)
	src := newSource(t)
	src.commit(srv.Store(), level{"A", "1"}, level{"B", "2"}, level{"A", "3"})

	subscribe := func(secret string, cursor uint64) *connect.ServerStreamForClient[deliveryv1.SubscribeResponse] {
		req := connect.NewRequest(&deliveryv1.SubscribeRequest{Destination: "partner-feed", Cursor: cursor})
		req.Header().Set("Authorization", "Bearer "+secret)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		s, err := client.Subscribe(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	next := func(s *connect.ServerStreamForClient[deliveryv1.SubscribeResponse]) (*deliveryv1.SubscribeResponse, stockPayload) {
		t.Helper()
		if !s.Receive() {
			t.Fatalf("stream ended: %v", s.Err())
		}
		var p stockPayload
		if err := json.Unmarshal(s.Msg().GetPayload(), &p); err != nil {
			t.Fatal(err)
		}
		return s.Msg(), p
	}

	if s := subscribe("whsec_wrong", 0); s.Receive() || connect.CodeOf(s.Err()) != connect.CodeUnauthenticated {
		t.Fatalf("wrong secret: received %v, err %v", s.Msg(), s.Err())
	}
	s := subscribe(testSecret, 0)
	for i, want := range []string{"A/1", "B/2", "A/3"} {
		msg, p := next(s)
		if got := p.SKU + "/" + p.Quantity; got != want || msg.GetCursor() != uint64(i+1) || msg.GetId() != p.ID {
			t.Fatalf("message %d: %s cursor %d id %s, want %s cursor %d", i, got, msg.GetCursor(), msg.GetId(), want, i+1)
		}
	}
	// Live: an event committed now arrives on the open stream.
	src.commit(srv.Store(), level{"C", "4"})
	done := make(chan string, 1)
	go func() {
		_, p := next(s)
		done <- p.SKU + "/" + p.Quantity
	}()
	select {
	case got := <-done:
		if got != "C/4" {
			t.Fatalf("live message %s, want C/4", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no live message within 10s")
	}
	// Resume after cursor 2 (with an admin token): the third event onwards.
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	r := subscribe(cc.Token, 2)
	for _, want := range []string{"A/3", "C/4"} {
		if _, p := next(r); fmt.Sprint(p.SKU, "/", p.Quantity) != want {
			t.Fatalf("resumed stream sent %s/%s, want %s", p.SKU, p.Quantity, want)
		}
	}
}

// A destination that takes batches gets JSON arrays with a deterministic batch id, and
// each key's messages still arrive in order.
func TestBatching(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	m, url := market(t, samplemarket.Config{FailRate: 0.1, Seed: 3})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "bulk", Kind: delivery.KindWebhook, URL: url, Secret: testSecret, AcceptsBatches: true,
			Policy: routing.Policy{RatePerSecond: 20, Burst: 1, BatchMaxEvents: 50, BatchMaxWait: 50 * time.Millisecond, InitialBackoff: 10 * time.Millisecond, MaxAttempts: 20}}},
		Routes: []delivery.Route{stockRoute("stock", "bulk")},
	}
	runEngine(t, srv.Store(), plan)
	src := newSource(t)
	for b := range 5 {
		var lv []level
		for i := range 200 {
			lv = append(lv, level{sku: fmt.Sprintf("S%d", i%40), qty: fmt.Sprint(b*200 + i)})
		}
		src.commit(srv.Store(), lv...)
	}
	waitCursor(t, srv.Store().Ledger(), "bulk", time.Minute)
	reqs := m.Requests()
	maxBatch := 0
	lastSeq := map[string]uint64{}
	for _, r := range reqs {
		maxBatch = max(maxBatch, len(r.Messages))
		if r.ID[:6] != "batch_" {
			t.Fatalf("batch request id %q, want a batch_ id", r.ID)
		}
		for _, p := range received(t, []samplemarket.Request{r}) {
			if p.Seq < lastSeq[p.SKU] {
				t.Fatalf("%s: seq %d after %d", p.SKU, p.Seq, lastSeq[p.SKU])
			}
			lastSeq[p.SKU] = p.Seq
		}
	}
	if maxBatch < 10 || maxBatch > 50 {
		t.Errorf("largest batch %d messages, want between 10 and the policy's 50", maxBatch)
	}
	got := m.Quantities()
	for sku, want := range src.latest {
		if got[sku] != want {
			t.Errorf("%s: receiver has %q, source %q", sku, got[sku], want)
		}
	}
	t.Logf("%d requests for 1000 events, largest batch %d", len(reqs), maxBatch)
}
