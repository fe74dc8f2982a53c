package sdk_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// scripted is a connector whose answers the test sets, to drive every path of the gRPC
// adapters (a test double for fault injection; real plugins are tested as binaries in
// agent/pluginhost).
type scripted struct {
	configureErr error
	batches      []sdk.Batch
	readErr      error
	results      []sdk.WriteResult
	acked        []string
}

func (s *scripted) Spec() sdk.Spec {
	return sdk.Spec{Name: "scripted", Version: "0.1", Source: true, Sink: true, Description: "test"}
}
func (s *scripted) Configure(context.Context, []byte) error { return s.configureErr }
func (s *scripted) Health(context.Context) error            { return errors.New("database down") }
func (s *scripted) Close() error                            { return nil }
func (s *scripted) Read(ctx context.Context, from string, emit sdk.Emit) error {
	for _, b := range s.batches {
		if err := emit(ctx, b); err != nil {
			return err
		}
	}
	return s.readErr
}
func (s *scripted) Ack(_ context.Context, p string) error { s.acked = append(s.acked, p); return nil }
func (s *scripted) Write(context.Context, []*eventv1.Event) ([]sdk.WriteResult, error) {
	return s.results, nil
}

// sinkOnly has no Read.
type sinkOnly struct{ sdk.Connector }

func connect(t *testing.T, c sdk.Connector) *sdk.Client {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{sdk.PluginName: &sdk.Plugin{Impl: c}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*sdk.Client)
}

func TestSpecConfigureHealth(t *testing.T) {
	s := &scripted{configureErr: &sdk.ConfigError{Field: "tables[0].key", Reason: "required"}}
	c := connect(t, s)
	ctx := context.Background()
	sp, err := c.Spec(ctx)
	if err != nil || sp != s.Spec() {
		t.Fatalf("Spec = %+v, %v", sp, err)
	}
	var ce *sdk.ConfigError
	if err := c.Configure(ctx, []byte(`{}`)); !errors.As(err, &ce) || ce.Field != "tables[0].key" || ce.Reason != "required" {
		t.Errorf("Configure = %v, want the plugin's ConfigError", err)
	}
	s.configureErr = sdk.Permanent(errors.New("no such database"))
	if err := c.Configure(ctx, nil); !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "no such database") {
		t.Errorf("Configure = %v, want a permanent error", err)
	}
	s.configureErr = nil
	if err := c.Configure(ctx, nil); err != nil {
		t.Errorf("Configure = %v", err)
	}
	if err := c.Health(ctx); err == nil || err.Error() != "database down" {
		t.Errorf("Health = %v", err)
	}
}

func TestReadCarriesBatchesAndErrors(t *testing.T) {
	ev := func(sku string) *eventv1.Event {
		return &eventv1.Event{Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: sku}}}
	}
	s := &scripted{
		batches: []sdk.Batch{
			{Events: []*eventv1.Event{ev("a"), ev("b")}, Position: "2", EventPositions: []string{"1", "2"}},
			{Position: "3"}, // progress without events
		},
		readErr: sdk.Permanent(errors.New("wal_level is replica")),
	}
	c := connect(t, s)
	ctx := context.Background()
	var got []sdk.Batch
	err := c.Read(ctx, "0", func(b sdk.Batch) error {
		got = append(got, b)
		return c.Ack(ctx, b.Position)
	})
	if !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "wal_level is replica") {
		t.Errorf("Read = %v, want the source's permanent error", err)
	}
	if len(got) != 2 || len(got[0].Events) != 2 || got[0].Events[1].GetItem().GetSku() != "b" ||
		strings.Join(got[0].EventPositions, ",") != "1,2" || got[1].Position != "3" || len(got[1].Events) != 0 {
		t.Errorf("batches = %+v", got)
	}
	if strings.Join(s.acked, ",") != "2,3" {
		t.Errorf("acked %v", s.acked)
	}

	// A transient error is not permanent; a callback error is returned as is.
	s.readErr = errors.New("connection reset")
	if err := c.Read(ctx, "", func(sdk.Batch) error { return nil }); err == nil || errors.Is(err, sdk.ErrPermanent) {
		t.Errorf("Read = %v, want a transient error", err)
	}
	stop := errors.New("stop")
	if err := c.Read(ctx, "", func(sdk.Batch) error { return stop }); err != stop {
		t.Errorf("Read = %v, want the callback's error", err)
	}

	// Event positions must match the events.
	s.batches = []sdk.Batch{{Events: []*eventv1.Event{ev("a")}, Position: "1", EventPositions: []string{"1", "2"}}}
	if err := c.Read(ctx, "", func(sdk.Batch) error { return nil }); !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "1 events but 2 event positions") {
		t.Errorf("Read = %v, want the mismatch refused", err)
	}
}

func TestWriteResults(t *testing.T) {
	s := &scripted{results: []sdk.WriteResult{
		{EventID: "ev_1", Ref: "SO-1"},
		{EventID: "ev_2", Err: sdk.Permanent(errors.New("unknown product"))},
		{EventID: "ev_3", Err: errors.New("timeout")},
	}}
	c := connect(t, s)
	evs := []*eventv1.Event{{Id: "ev_1"}, {Id: "ev_2"}, {Id: "ev_3"}}
	res, err := c.Write(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Ref != "SO-1" || res[0].Err != nil || !errors.Is(res[1].Err, sdk.ErrPermanent) ||
		res[2].Err == nil || errors.Is(res[2].Err, sdk.ErrPermanent) || res[2].EventID != "ev_3" {
		t.Errorf("results = %+v", res)
	}
	s.results = s.results[:1]
	if _, err := c.Write(context.Background(), evs); err == nil || !strings.Contains(err.Error(), "1 results for 3 events") {
		t.Errorf("Write with too few results = %v", err)
	}
}

func TestRolesNotImplemented(t *testing.T) {
	c := connect(t, sinkOnly{&scripted{}})
	err := c.Read(context.Background(), "", func(sdk.Batch) error { return nil })
	if !errors.Is(err, sdk.ErrPermanent) || !strings.Contains(err.Error(), "not a source") {
		t.Errorf("Read on a sink-only plugin = %v", err)
	}
}
