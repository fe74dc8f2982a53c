package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/agent/outbox"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1/agentv1connect"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// failingAgent is a fake agent for fault injection: its Publish returns err.
type failingAgent struct{ err error }

func (f failingAgent) Publish(context.Context, string, []*eventv1.Event) (*agentv1.PublishResponse, error) {
	return nil, f.err
}
func (f failingAgent) Status() *agentv1.AgentStatus { return &agentv1.AgentStatus{} }

func TestPublishErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code connect.Code
	}{
		{fmt.Errorf("outbox: append: waited 1s: %w: %w", outbox.ErrQuotaFull, context.DeadlineExceeded), connect.CodeResourceExhausted},
		{&outbox.Damage{Dir: "outbox", Problems: []string{"000001.sst: damaged"}}, connect.CodeFailedPrecondition},
		{fmt.Errorf("%w while running, appends refused", outbox.ErrDamaged), connect.CodeFailedPrecondition},
		{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
		{errors.New("disk on fire"), connect.CodeInternal},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, ln, failingAgent{tc.err}, slog.New(slog.DiscardHandler)) }()
		client := agentv1connect.NewAgentServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
		_, err = client.Publish(context.Background(), connect.NewRequest(&agentv1.PublishRequest{Events: []*eventv1.Event{{}}}))
		if got := connect.CodeOf(err); got != tc.code {
			t.Errorf("Publish failing with %q answered %v (%v), want %v", tc.err, got, err, tc.code)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
