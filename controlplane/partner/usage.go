package partner

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Usage counts this node's partner calls in memory (per partner, method and code),
// keeps its refusals and the newest use of each key, and hands them to raft in one
// RECORD_PARTNER_USAGE every FlushEvery: nothing is written per request.
type Usage struct {
	Node string

	mu      sync.Mutex
	pending map[string]*storev1.PartnerUsage // by partner + " " + day
	// total counts every call since start, for this node's own view.
	total map[string]uint64
}

// maxPendingRefusals bounds the refusals one partner's report carries (newest kept).
const maxPendingRefusals = 50

func (u *Usage) entry(partner string, at time.Time) *storev1.PartnerUsage {
	day := Day(at)
	if u.pending == nil {
		u.pending = map[string]*storev1.PartnerUsage{}
		u.total = map[string]uint64{}
	}
	k := partner + " " + day
	e := u.pending[k]
	if e == nil {
		e = &storev1.PartnerUsage{Partner: partner, Day: day, Calls: map[string]uint64{}, KeyLastUsedUnixNano: map[string]int64{}}
		u.pending[k] = e
	}
	return e
}

// Call counts one call of partner's method that ended with code ("ok", or a Connect
// code such as "resource_exhausted").
func (u *Usage) Call(partner, method, code, keyID string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.entry(partner, at)
	e.Calls[method+" "+code]++
	u.total[partner+" "+method+" "+code]++
	if keyID != "" && code == "ok" {
		if n := at.UnixNano(); n > e.KeyLastUsedUnixNano[keyID] {
			e.KeyLastUsedUnixNano[keyID] = n
		}
	}
}

// Refuse records a refused call in the audit trail.
func (u *Usage) Refuse(partner string, r *storev1.PartnerRefusal) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e := u.entry(partner, r.GetAt().AsTime())
	e.Refusals = append(e.Refusals, r)
	if n := len(e.Refusals); n > maxPendingRefusals {
		e.Refusals = e.Refusals[n-maxPendingRefusals:]
	}
}

// Totals returns this node's counters since it started: "partner method code" -> calls.
func (u *Usage) Totals() map[string]uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]uint64, len(u.total))
	for k, v := range u.total {
		out[k] = v
	}
	return out
}

// take returns the pending report and starts a new one; nil when there is nothing.
func (u *Usage) take(served map[string]uint64, now time.Time) *storev1.RecordPartnerUsage {
	u.mu.Lock()
	defer u.mu.Unlock()
	for p, n := range served {
		u.entry(p, now).QuotaUsed += n
	}
	if len(u.pending) == 0 {
		return nil
	}
	r := &storev1.RecordPartnerUsage{Node: u.Node}
	keys := make([]string, 0, len(u.pending))
	for k := range u.pending {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.Usage = append(r.Usage, u.pending[k])
	}
	u.pending = nil
	return r
}

// putBack merges a report that could not be proposed into the pending one, so the next
// flush carries it.
func (u *Usage) putBack(r *storev1.RecordPartnerUsage) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range r.GetUsage() {
		at, _ := time.Parse("2006-01-02", p.GetDay())
		e := u.entry(p.GetPartner(), at)
		for k, v := range p.GetCalls() {
			e.Calls[k] += v
		}
		e.QuotaUsed += p.GetQuotaUsed()
		e.Refusals = append(p.GetRefusals(), e.Refusals...)
		if n := len(e.Refusals); n > maxPendingRefusals {
			e.Refusals = e.Refusals[n-maxPendingRefusals:]
		}
		for k, v := range p.GetKeyLastUsedUnixNano() {
			if v > e.KeyLastUsedUnixNano[k] {
				e.KeyLastUsedUnixNano[k] = v
			}
		}
	}
}

// Flusher proposes the batched usage every Every (2s when 0) until ctx ends, and once
// more then.
type Flusher struct {
	Usage   *Usage
	Quota   *Quota
	Propose func(ctx context.Context, r *storev1.RecordPartnerUsage) error
	Every   time.Duration
	Logger  *slog.Logger
}

// Run flushes until ctx ends.
func (f *Flusher) Run(ctx context.Context) {
	every := f.Every
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			f.Flush(sctx)
			cancel()
			return
		case <-t.C:
			f.Flush(ctx)
		}
	}
}

// Flush proposes what is pending now.
func (f *Flusher) Flush(ctx context.Context) {
	var served map[string]uint64
	now := time.Now()
	if f.Quota != nil {
		served, now = f.Quota.Served(), f.Quota.now() // the days the quota counts
	}
	r := f.Usage.take(served, now)
	if r == nil {
		return
	}
	if err := f.Propose(ctx, r); err != nil {
		f.Usage.putBack(r)
		if f.Logger != nil {
			f.Logger.Warn("partner usage: could not record; kept for the next flush", "err", err)
		}
	}
}

func refusal(node, method, reason, keyID, detail string, at time.Time) *storev1.PartnerRefusal {
	return &storev1.PartnerRefusal{At: timestamppb.New(at), Node: node, Method: method, Reason: reason, KeyId: keyID, Detail: detail}
}
