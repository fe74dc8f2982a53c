package sql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// benchRows is how many rows one capture run reads.
const benchRows = 100_000

var errCaughtUp = errors.New("caught up")

// BenchmarkCapturePostgres measures the sql source's capture rate from a real
// PostgreSQL into a real agent outbox: a table of 100,000 stock rows (20 per
// timestamp, so the equal-timestamp rule is exercised) is read incrementally from the
// start; each batch's events get their ids as the agent gives them, are marshalled and
// appended (fsynced) with the batch's position in one outbox transaction. One op is one
// whole capture run into a fresh outbox; the figure is the median rows/s of the runs
// (run with -benchtime Nx for N runs).
func BenchmarkCapturePostgres(b *testing.B) {
	be := startPostgres(b)
	b.Logf("loading %d rows", benchRows)
	be.exec(b, `CREATE TABLE bench_stock (id bigint PRIMARY KEY, sku text NOT NULL, location text NOT NULL,
		on_hand numeric(12,3) NOT NULL, allocated numeric(12,3) NOT NULL, updated_at timestamp(6) NOT NULL)`)
	be.exec(b, fmt.Sprintf(`INSERT INTO bench_stock SELECT g, 'SKU-' || lpad((g %% 20000)::text, 6, '0'), 'WH-' || (g %% 3),
		(g %% 997) + 0.5, g %% 13, timestamp '2026-03-01 00:00:00' + (g / 20) * interval '1 millisecond'
		FROM generate_series(1, %d) g`, benchRows))
	be.exec(b, `CREATE INDEX ON bench_stock (updated_at, id)`)
	be.exec(b, `ANALYZE bench_stock`)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	for _, batch := range []int{100, 500, 2000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			settings := map[string]any{"driver": "postgres", "dsn": be.dsn, "batch_size": batch, "poll_interval": "1s",
				"tables": []any{map[string]any{"table": "bench_stock", "timestamp_column": "updated_at", "key_column": "id",
					"mapping": map[string]any{"type": "inventory.level", "fields": map[string]string{
						"sku": "sku", "location": "location", "on_hand": "on_hand", "allocated": "allocated"}}}}}
			var rates []float64
			for b.Loop() {
				b.StopTimer()
				ob, err := outbox.Open(outbox.Options{Dir: b.TempDir(), QuotaBytes: 1 << 34, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				c := configure(b, settings)
				ctx, cancel := context.WithCancel(context.Background())
				n := 0
				b.StartTimer()
				start := time.Now()
				err = c.Read(ctx, "", func(ctx context.Context, bt sdk.Batch) error {
					recs := make([][]byte, len(bt.Events))
					for i, ev := range bt.Events { // what the agent does with a batch
						ev.Id = canonical.ID("bench-agent", "erp", bt.EventPositions[i])
						ev.Source = &eventv1.Source{Agent: "bench-agent", Connector: "erp", Position: bt.EventPositions[i]}
						rec, err := proto.Marshal(ev)
						if err != nil {
							return err
						}
						recs[i] = rec
					}
					if _, _, err := ob.Append(ctx, recs, outbox.Position{Name: "erp", Value: bt.Position}); err != nil {
						return err
					}
					if n += len(bt.Events); n >= benchRows {
						cancel()
						return errCaughtUp
					}
					return nil
				})
				el := time.Since(start)
				b.StopTimer()
				cancel()
				if err != nil && !errors.Is(err, errCaughtUp) {
					b.Fatal(err)
				}
				if n != benchRows {
					b.Fatalf("captured %d rows, want %d", n, benchRows)
				}
				if st := ob.Stats(); st.PendingEvents != benchRows {
					b.Fatalf("outbox holds %d events, want %d", st.PendingEvents, benchRows)
				}
				c.Close()
				ob.Close()
				rates = append(rates, float64(n)/el.Seconds())
				b.StartTimer()
			}
			slices.Sort(rates)
			b.ReportMetric(rates[len(rates)/2], "rows/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
