package pluginhost_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/pluginhost"
)

// BenchmarkHostCapture measures the whole capture path of a source connector: the
// example plugin's batches cross the go-plugin boundary, get ids, are appended with
// their position in one fsynced outbox transaction, and are acknowledged to the plugin.
// One op is one batch.
func BenchmarkHostCapture(b *testing.B) {
	bin, sum := examplePlugin(b)
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			ob, err := outbox.Open(outbox.Options{Dir: filepath.Join(b.TempDir(), "outbox"), MinFreeBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			total := uint64(b.N * n)
			h, err := pluginhost.New(pluginhost.Options{AgentID: "bench", Outbox: ob, Logger: slog.New(slog.DiscardHandler)}, []pluginhost.Connector{{
				Name: "counter", Path: bin, SHA256: sum,
				Settings: fmt.Appendf(nil, `{"sku":"SKU-00001","location":"WH-EAST","batch":%d,"count":%d}`, n, total),
			}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); h.Run(ctx) }()
			// The plugin's launch is not part of the per-batch cost.
			for {
				changed := h.Changed()
				if h.Status()[0].GetState() != pluginhost.StateStarting {
					break
				}
				<-changed
			}
			first := ob.Stats().LastSeq
			b.ResetTimer()
			for ob.Stats().LastSeq < total {
				select {
				case <-ob.Notify():
				case <-time.After(time.Second):
					if s := h.Status()[0]; s.GetState() != pluginhost.StateRunning && s.GetState() != pluginhost.StateStarting {
						b.Fatalf("connector %s: %s", s.GetState(), s.GetLastError())
					}
				}
			}
			b.StopTimer()
			cancel()
			<-done
			batches := float64(total-first) / float64(n)
			b.ReportMetric(float64(total-first)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/batches, "µs/batch")
		})
	}
}
