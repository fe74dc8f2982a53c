package outbox

import (
	"context"
	"fmt"
	"time"
)

type waiter struct{ need uint64 }

// reserve takes size bytes of quota, waiting in FIFO order for acks if needed.
func (o *Outbox) reserve(ctx context.Context, size uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed != nil {
		return o.failed
	}
	if len(o.waitq) == 0 && o.fitsLocked(size) {
		o.reserved += size
		return nil
	}
	w := &waiter{need: size}
	o.waitq = append(o.waitq, w)
	start := time.Now()
	if len(o.waitq) == 1 {
		o.blockedSince = start
		o.log.Warn("outbox full; producers blocked until the control plane acknowledges",
			"pending_bytes", o.pendingBytes+o.reserved, "quota_bytes", o.quota, "batch_bytes", size)
	}
	for {
		switch {
		case o.closed:
			o.dequeueLocked(w)
			return fmt.Errorf("outbox: append: %w", ErrClosed)
		case o.failed != nil:
			o.dequeueLocked(w)
			return o.failed
		case o.waitq[0] == w && o.fitsLocked(size):
			o.dequeueLocked(w)
			o.reserved += size
			return nil
		}
		ch := o.spaceCh
		o.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(time.Second): // free disk space comes back without an ack
		case <-o.closeCh:
		case <-ctx.Done():
			o.mu.Lock()
			o.dequeueLocked(w)
			if o.quotaFitsLocked(size) {
				return fmt.Errorf("outbox: append: waited %s for free disk space (keeping %d MiB free): %w: %w",
					time.Since(start).Round(time.Millisecond), o.minFree>>20, ErrQuotaFull, ctx.Err())
			}
			return fmt.Errorf("outbox: append: waited %s for %d bytes of quota (%d of %d bytes pending): %w: %w",
				time.Since(start).Round(time.Millisecond), size, o.pendingBytes+o.reserved, o.quota,
				ErrQuotaFull, ctx.Err())
		}
		o.mu.Lock()
	}
}

func (o *Outbox) fitsLocked(size uint64) bool {
	return o.quotaFitsLocked(size) && o.diskFits(size)
}

func (o *Outbox) quotaFitsLocked(size uint64) bool {
	return o.pendingBytes+o.reserved+size <= o.quota
}

// diskFits reports whether the file system keeps MinFreeBytes after a batch of size
// bytes (counted twice: value log plus LSM and WAL). An error reading it lets the
// append through: the quota still bounds the outbox.
func (o *Outbox) diskFits(size uint64) bool {
	if o.minFree < 0 {
		return true
	}
	free, err := o.free()
	if err != nil {
		return true
	}
	return free >= uint64(o.minFree)+2*size
}

// dequeueLocked removes w from the wait queue and wakes the others, since the head
// may have changed.
func (o *Outbox) dequeueLocked(w *waiter) {
	for i, x := range o.waitq {
		if x == w {
			o.waitq = append(o.waitq[:i], o.waitq[i+1:]...)
			break
		}
	}
	if len(o.waitq) == 0 && !o.blockedSince.IsZero() {
		o.log.Info("outbox no longer blocked", "blocked_for", time.Since(o.blockedSince).Round(time.Millisecond))
		o.blockedSince = time.Time{}
	}
	o.wakeLocked()
}

// wakeLocked wakes every waiting Append so the head re-checks the quota.
func (o *Outbox) wakeLocked() {
	if len(o.waitq) == 0 {
		return
	}
	close(o.spaceCh)
	o.spaceCh = make(chan struct{})
}
