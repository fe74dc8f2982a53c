package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// buildExample builds the example plugin binary into a temp dir.
func buildExample(tb testing.TB) string {
	tb.Helper()
	bin, _ := testutil.BuildPlugin(tb, "github.com/crossdock/crossdock/plugins/example")
	return bin
}

// launch starts the plugin as the agent does (go-plugin, gRPC only) and returns its
// client.
func launch(tb testing.TB, bin string) *sdk.Client {
	tb.Helper()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          plugin.PluginSet{sdk.PluginName: &sdk.Plugin{}},
		Cmd:              exec.Command(bin),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  sdk.DialOptions(),
		Logger:           hclog.NewNullLogger(),
	})
	tb.Cleanup(client.Kill)
	cp, err := client.Client()
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := cp.Dispense(sdk.PluginName)
	if err != nil {
		tb.Fatal(err)
	}
	return raw.(*sdk.Client)
}

var errEnough = errors.New("enough batches")

// BenchmarkPluginBoundary measures what crossing the go-plugin boundary costs per batch:
// the plugin builds a batch of inventory-level events, it is marshalled, streamed over
// the plugin's local gRPC connection, unmarshalled in this process, and acknowledged with
// one Ack call, as the agent's source loop does (without the outbox, measured by
// agent/outbox's benchmarks). One op is one batch.
func BenchmarkPluginBoundary(b *testing.B) {
	bin := buildExample(b)
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			rpc := launch(b, bin)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := rpc.Configure(ctx, fmt.Appendf(nil, `{"sku":"SKU-00001","location":"WH-EAST","batch":%d}`, n)); err != nil {
				b.Fatal(err)
			}
			batches, events := 0, 0
			b.ResetTimer()
			err := rpc.Read(ctx, "", func(bt sdk.Batch) error {
				events += len(bt.Events)
				if err := rpc.Ack(ctx, bt.Position); err != nil {
					return err
				}
				if batches++; batches == b.N {
					b.StopTimer()
					return errEnough
				}
				return nil
			})
			if !errors.Is(err, errEnough) {
				b.Fatal(err)
			}
			if events != b.N*n {
				b.Fatalf("%d events in %d batches of %d", events, b.N, n)
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "µs/batch")
		})
	}
}
