package retention

import (
	"fmt"
	"hash/maphash"
	"runtime"
	"testing"
)

// BenchmarkFollowerMemory reports the live heap the leader's follower of compact keys
// holds per key (B/key) at 100,000 and 1,000,000 keys, measured after a GC: the figure
// behind "35–56 bytes a key" in docs/operations.md.
func BenchmarkFollowerMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			var perKey float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				f := &compactFollower{keys: []map[keyID]uint64{{}}, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
				var key []byte
				for i := range n {
					key = fmt.Appendf(key[:0], "lc/inventory.level/location=WH-%02d/sku=SKU-%07d", i%20, i)
					f.keys[0][f.id(key)] = uint64(i)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if f.size() != n {
					b.Fatalf("%d keys recorded, want %d", f.size(), n)
				}
				perKey = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
				runtime.KeepAlive(f)
			}
			b.ReportMetric(perKey, "B/key")
		})
	}
}
