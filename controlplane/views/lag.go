package views

import (
	"context"
	"slices"
	"sync"
	"time"
)

// lagTracker measures how far the views trail the ledger on this node: a probe wakes
// on every apply notification and notes (time, last seq); when the views have folded
// that seq, the time since is one sample. The probe runs beside the fold loop, so a
// busy fold does not hide the apply times.
type lagTracker struct {
	mu      sync.Mutex
	pending []applied // probe samples not folded yet, ascending seq
	ring    [lagRing]time.Duration
	n       int // samples taken (ring holds the last min(n, lagRing))
}

const (
	lagRing    = 1 << 16
	maxPending = 1 << 12
)

type applied struct {
	seq uint64
	t   time.Time
}

// probe notes each apply until ctx ends.
func (lt *lagTracker) probe(ctx context.Context, src Source) {
	for {
		ch := src.Changed()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		now, seq := time.Now(), src.LastSeq()
		lt.mu.Lock()
		if k := len(lt.pending); len(lt.pending) < maxPending && (k == 0 || lt.pending[k-1].seq < seq) {
			lt.pending = append(lt.pending, applied{seq, now})
		}
		lt.mu.Unlock()
	}
}

// folded records that the views reflect seq at now.
func (lt *lagTracker) folded(seq uint64, now time.Time) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	i := 0
	for ; i < len(lt.pending) && lt.pending[i].seq <= seq; i++ {
		lt.ring[lt.n%lagRing] = max(now.Sub(lt.pending[i].t), 0)
		lt.n++
	}
	lt.pending = append(lt.pending[:0], lt.pending[i:]...)
}

// quantiles returns the number of samples and the p50, p99 and maximum of the last ones.
func (lt *lagTracker) quantiles() (n int, p50, p99, maxLag time.Duration) {
	lt.mu.Lock()
	k := min(lt.n, lagRing)
	s := slices.Clone(lt.ring[:k])
	n = lt.n
	lt.mu.Unlock()
	if k == 0 {
		return n, 0, 0, 0
	}
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[int(p*float64(k-1))] }
	return n, at(0.50), at(0.99), s[k-1]
}
