package outbox

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDiskFullBlocks injects a nearly full disk (the FreeSpace hook is the fault
// injection): Append blocks with a "disk full" status instead of writing, and goes on
// by itself once space comes back.
func TestDiskFullBlocks(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	o, err := Open(Options{Dir: t.TempDir(), MinFreeBytes: 100 << 20, FreeSpace: func() (uint64, error) { return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, _, err := o.Append(context.Background(), recs("a", 10, 256)); err != nil {
		t.Fatal(err)
	}
	free.Store(50 << 20) // below the 100 MiB kept free
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _, err = o.Append(ctx, recs("b", 10, 256))
	cancel()
	if !errors.Is(err, ErrQuotaFull) {
		t.Fatalf("append on a full disk: %v, want it to block and time out", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := o.Append(context.Background(), recs("c", 10, 256))
		done <- err
	}()
	waitFor(t, "disk full status", func() bool {
		st := o.Stats()
		return st.Blocked && strings.Contains(st.BlockedReason, "disk full")
	})
	free.Store(1 << 30)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("append did not resume once disk space came back")
	}
	if st := o.Stats(); st.PendingEvents != 20 || st.Blocked {
		t.Fatalf("stats after recovery: %+v", st)
	}
}
