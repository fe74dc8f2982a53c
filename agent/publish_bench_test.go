package agent_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// benchPublish measures Publish of batches of 100 inventory levels into the outbox
// (fsynced; the uplink is not run): one op is one call. Tracing-off cost and
// allocations are compared against main with it (docs/observability.md).
func benchPublish(b *testing.B) {
	srv := controlplanetest.TestServer(b, nil)
	tok, err := srv.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, AgentName: "bench"}))
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(context.Background(), agent.Config{DataDir: b.TempDir(), Servers: []string{srv.Addr()}, EnrollToken: tok.Msg.GetToken(), LocalAddr: "-", Logger: controlplanetest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Outbox().Close()
	evs := make([]*eventv1.Event, 100)
	for i := range evs {
		evs[i] = &eventv1.Event{Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{Sku: fmt.Sprintf("SKU-%03d", i), Location: "WH1"}}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i, ev := range evs {
			ev.Id, ev.Type, ev.Source, ev.Trace, ev.Keys = "", "", nil, nil, nil
			ev.GetInventoryLevel().OnHand = fmt.Sprint(n*100 + i)
		}
		if _, err := a.Publish(context.Background(), "", evs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublish(b *testing.B) { benchPublish(b) }
