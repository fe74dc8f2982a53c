package pgcdc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/crossdock/crossdock/internal/testkit/testsvc"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// BenchmarkCapture measures decoding and mapping throughput: b.N stock rows, written
// in transactions of 100 before capture starts, read from the slot and emitted as
// canonical events (acked at once, as a fast outbox would). Reports rows/s.
func BenchmarkCapture(b *testing.B) {
	pg := testsvc.StartPostgres(b, testsvc.PostgresOptions{Logical: true})
	ctx := testsvc.Context(b)
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	mustExec := func(sql string, args ...any) {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec(`CREATE TABLE stock (sku text, location text, qty numeric NOT NULL, PRIMARY KEY (sku, location));
CREATE TABLE prices (sku text PRIMARY KEY, amount numeric(12,2) NOT NULL)`)
	raw := settings(pg.DSN, nil)

	// Create the slot and publication, then write the rows while nothing reads.
	c := New(nil)
	if err := c.Configure(ctx, raw); err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Read(rctx, "", func(context.Context, sdk.Batch) error { return nil }) }()
	waitStreaming(b, &db{pg: pg, conn: conn}, "crossdock")
	cancel()
	<-done
	for i := 0; i < b.N; i += 100 {
		mustExec(`INSERT INTO stock SELECT 'SKU-' || g, 'WH-' || $1::int, g FROM generate_series($1::int, $1::int + 99) g`, i)
	}

	c = New(nil)
	if err := c.Configure(ctx, raw); err != nil {
		b.Fatal(err)
	}
	var rows atomic.Int64
	rctx, cancel = context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	b.ResetTimer()
	go func() {
		done <- c.Read(rctx, "", func(ctx context.Context, bt sdk.Batch) error {
			rows.Add(int64(len(bt.Events)))
			return c.Ack(ctx, bt.Position)
		})
	}()
	want := int64((b.N + 99) / 100 * 100)
	testutil.WaitFor(b, 10*time.Minute, "all rows captured", func() bool { return rows.Load() >= want })
	b.StopTimer()
	b.ReportMetric(float64(rows.Load())/time.Since(start).Seconds(), "rows/s")
	cancel()
	<-done
}
