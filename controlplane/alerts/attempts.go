package alerts

import (
	"sync"
	"time"

	"github.com/crossdock/crossdock/controlplane/routing"
)

// attemptBucket is how much time one bucket of the error-rate tracker covers.
const attemptBucket = 5 * time.Second

const nBuckets = int(routing.MaxAlertWindow/attemptBucket) + 1

// attempts counts the delivery attempts and failures of each destination on this node
// in buckets of attemptBucket over the longest window (routing.MaxAlertWindow), for
// errorRate. It is fed by the delivery engine's OnAttempt hook.
type attempts struct {
	mu      sync.Mutex
	started time.Time
	dests   map[string]*attemptRing
}

type attemptRing struct {
	slot  [nBuckets]int64 // bucket number held in each slot
	total [nBuckets]uint32
	fail  [nBuckets]uint32
}

// add counts one attempt; failed is true for a transient or permanent failure (a 429 is
// pacing, not a failure).
func (a *attempts) add(dest string, failed bool, at time.Time) {
	b := at.UnixNano() / int64(attemptBucket)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dests == nil {
		a.dests = map[string]*attemptRing{}
	}
	r := a.dests[dest]
	if r == nil {
		r = &attemptRing{}
		a.dests[dest] = r
	}
	i := int(b % int64(nBuckets))
	if r.slot[i] != b {
		r.slot[i], r.total[i], r.fail[i] = b, 0, 0
	}
	r.total[i]++
	if failed {
		r.fail[i]++
	}
}

// rate returns the attempts and failures of dest in the window before now.
func (a *attempts) rate(dest string, window time.Duration, now time.Time) (total, failed uint64) {
	hi := now.UnixNano() / int64(attemptBucket)
	lo := now.Add(-window).UnixNano() / int64(attemptBucket)
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.dests[dest]
	if r == nil {
		return 0, 0
	}
	for i := range r.slot {
		if s := r.slot[i]; s > lo && s <= hi {
			total += uint64(r.total[i])
			failed += uint64(r.fail[i])
		}
	}
	return total, failed
}

// reset forgets everything (leadership lost: a later leadership measures afresh).
func (a *attempts) reset(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dests, a.started = nil, now
}

// since is when the tracker started measuring.
func (a *attempts) since() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.started
}
