package ledger

import (
	"strings"
	"testing"
)

// TestCacheBytesSizesBlockCache: Options.CacheBytes is the Badger block cache (the
// memory crossdock server --ledger-cache gives), the default when unset, and a budget
// too small to hold a read's blocks is refused with the flag to change.
func TestCacheBytesSizesBlockCache(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache int64
		want  int64
	}{
		{"default", 0, DefaultCacheBytes},
		{"set", 48 << 20, 48 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Open(Options{Dir: t.TempDir(), CacheBytes: tc.cache})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			o := l.cur.db.Opts()
			if o.BlockCacheSize != tc.want {
				t.Errorf("block cache %d bytes, want %d", o.BlockCacheSize, tc.want)
			}
			if o.IndexCacheSize != 0 {
				t.Errorf("index cache %d bytes, want 0 (indexes are read in place from the mapped tables)", o.IndexCacheSize)
			}
		})
	}
	_, err := Open(Options{Dir: t.TempDir(), CacheBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "--ledger-cache") {
		t.Fatalf("1 MiB cache: got %v, want a refusal naming --ledger-cache", err)
	}
}
