package partner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Quota serves a partner's daily quota on this node from blocks the leader leased to it
// through raft (LEASE_QUOTA). The leader grants a block only while the blocks granted
// for the day stay within the quota, so the whole cluster serves at most the quota; a
// node that cannot reach the leader serves what it holds, then refuses.
type Quota struct {
	// Node is this node's id (the lease holder).
	Node string
	// Lease proposes LEASE_QUOTA (Proposer.Propose in production; tests may inject).
	Lease func(ctx context.Context, l *storev1.LeaseQuota) (*storev1.LeaseQuotaResult, error)
	// Return proposes RETURN_QUOTA.
	Return func(ctx context.Context, r *storev1.ReturnQuota) error
	Now    func() time.Time
	Logger *slog.Logger

	mu      sync.Mutex
	buckets map[string]*quotaBucket
}

type quotaBucket struct {
	day     string
	left    uint64 // leased to this node and not yet served
	granted uint64 // cluster-wide total granted for the day, as of the last lease
	quota   uint64
	served  uint64 // served by this node today, not yet reported
	leasing *leaseOp
	empty   bool // the leader granted nothing: the quota is spent
	// failedAt and failure are the last failed lease: for LeaseRetry after it, calls
	// that find nothing held are refused at once instead of asking again.
	failedAt time.Time
	failure  error
}

// leaseOp is one lease in flight; err is set before done closes.
type leaseOp struct {
	done chan struct{}
	err  error
}

// LeaseTimeout bounds one lease (retried inside while the leader changes); LeaseRetry
// is how long after a failed lease the next is tried.
const (
	LeaseTimeout = 2 * time.Second
	LeaseRetry   = 250 * time.Millisecond
)

// BlockSize is how much of a daily quota one lease asks for: max(10, quota/50).
func BlockSize(quota uint64) uint64 { return max(10, quota/50) }

// Day is the UTC day a time falls in, as the quota counts it.
func Day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// ErrQuotaExhausted: the partner's daily quota is spent cluster-wide.
var ErrQuotaExhausted = errors.New("daily quota exhausted")

// ErrQuotaUnavailable: this node has served its leased blocks and cannot lease more
// (no leader reachable).
var ErrQuotaUnavailable = errors.New("quota lease unavailable")

func (q *Quota) now() time.Time {
	if q.Now != nil {
		return q.Now()
	}
	return time.Now()
}

// Take takes one request of partner's daily quota. remaining is an estimate of what is
// left cluster-wide (the quota less what was granted, plus what this node holds).
func (q *Quota) Take(ctx context.Context, partner string, quota uint64) (remaining uint64, err error) {
	day := Day(q.now())
	for {
		q.mu.Lock()
		if q.buckets == nil {
			q.buckets = map[string]*quotaBucket{}
		}
		b := q.buckets[partner]
		if b == nil || b.day != day {
			b = &quotaBucket{day: day, quota: quota}
			q.buckets[partner] = b
		}
		b.quota = quota
		if b.left > 0 {
			b.left--
			b.served++
			if b.left < BlockSize(quota)/2 && b.leasing == nil && !b.empty {
				q.startLease(partner, b) // prefetch the next block
			}
			rem := b.left + sub(b.quota, b.granted)
			q.mu.Unlock()
			return rem, nil
		}
		if b.empty {
			q.mu.Unlock()
			return 0, fmt.Errorf("%w: %d requests granted today (UTC)", ErrQuotaExhausted, quota)
		}
		op := b.leasing
		if op == nil {
			if !b.failedAt.IsZero() && q.now().Sub(b.failedAt) < LeaseRetry {
				err := b.failure
				q.mu.Unlock()
				return 0, fmt.Errorf("%w: %v", ErrQuotaUnavailable, err)
			}
			op = q.startLease(partner, b)
		}
		q.mu.Unlock()
		select {
		case <-op.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if op.err != nil {
			q.mu.Lock()
			left := b.left
			q.mu.Unlock()
			if left == 0 {
				return 0, fmt.Errorf("%w: %v", ErrQuotaUnavailable, op.err)
			}
		}
	}
}

func sub(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// startLease asks the leader for a block in the background; q.mu is held.
func (q *Quota) startLease(partner string, b *quotaBucket) *leaseOp {
	op := &leaseOp{done: make(chan struct{})}
	b.leasing = op
	req := &storev1.LeaseQuota{Partner: partner, Day: b.day, Node: q.Node, Block: BlockSize(b.quota), Quota: b.quota}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), LeaseTimeout)
		res, err := q.Lease(ctx, req)
		cancel()
		q.mu.Lock()
		defer q.mu.Unlock()
		defer close(op.done)
		b.leasing, op.err = nil, err
		if err != nil {
			if b.failedAt.IsZero() && q.Logger != nil {
				q.Logger.Warn("partner quota: cannot lease a block; serving what this node holds, then refusing until a lease succeeds", "partner", partner, "day", b.day, "err", err)
			}
			b.failedAt, b.failure = q.now(), err
			return
		}
		b.failedAt, b.failure = time.Time{}, nil
		b.left += res.GetGranted()
		b.granted = res.GetGrantedTotal()
		if res.GetGranted() == 0 {
			b.empty = true
		}
	}()
	return op
}

// Served returns and resets, per partner, the requests this node served from its
// blocks since the last call (for the usage report).
func (q *Quota) Served() map[string]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]uint64{}
	for p, b := range q.buckets {
		if b.served > 0 {
			out[p] = b.served
			b.served = 0
		}
	}
	return out
}

// Held returns what this node holds unserved per partner (for describe and tests).
func (q *Quota) Held() map[string]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]uint64{}
	for p, b := range q.buckets {
		out[p] = b.left
	}
	return out
}

// ReturnUnused gives every unserved block of today back to the cluster (RETURN_QUOTA),
// at a clean shutdown. Blocks in flight are waited for first.
func (q *Quota) ReturnUnused(ctx context.Context) {
	q.mu.Lock()
	var waits []chan struct{}
	for _, b := range q.buckets {
		if b.leasing != nil {
			waits = append(waits, b.leasing.done)
		}
	}
	q.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
		}
	}
	q.mu.Lock()
	type ret struct {
		partner string
		b       quotaBucket
	}
	var rets []ret
	today := Day(q.now())
	for p, b := range q.buckets {
		if b.left > 0 && b.day == today {
			rets = append(rets, ret{p, *b})
			b.left = 0
			b.empty = true // nothing more is served from this node
		}
	}
	q.mu.Unlock()
	for _, r := range rets {
		if q.Return == nil {
			continue
		}
		if err := q.Return(ctx, &storev1.ReturnQuota{Partner: r.partner, Day: r.b.day, Node: q.Node, Unused: r.b.left}); err != nil && q.Logger != nil {
			q.Logger.Warn("partner quota: could not return unused blocks; they count as used today", "partner", r.partner, "unused", r.b.left, "err", err)
		}
	}
}
