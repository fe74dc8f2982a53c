package outbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend measures fsynced appends of 256-byte records in batches of 1, 100
// and 1000, from one appender and from four concurrent ones (which share Badger's
// group commits). It reports events/s; one op is one Append call.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		for _, appenders := range []int{1, 4} {
			b.Run(fmt.Sprintf("batch=%d/appenders=%d", batch, appenders), func(b *testing.B) {
				o, err := Open(Options{Dir: b.TempDir(), QuotaBytes: 1 << 40, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				defer o.Close()
				recs := make([][]byte, batch)
				for i := range recs {
					recs[i] = make([]byte, 256)
					for j := range recs[i] {
						recs[i][j] = byte(i + j)
					}
				}
				b.SetBytes(int64(batch * 256))
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				per := (b.N + appenders - 1) / appenders
				for range appenders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							if _, _, err := o.Append(context.Background(), recs); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				b.StopTimer()
				b.ReportMetric(float64(per*appenders*batch)/el, "events/s")
				b.ReportMetric(float64(per*appenders)/el, "appends/s")
			})
		}
	}
}
