package uplink

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// window bounds the batches in flight: a slot is taken per batch sent and given back
// when an ack covers the batch's last seq.
type window struct {
	slots   chan struct{}
	mu      sync.Mutex
	sent    uint64 // the highest seq sent (or committed at connect)
	lasts   []uint64
	since   []time.Time // when each batch in lasts was sent
	lastAck time.Time
}

func (w *window) acquire(ctx context.Context, last uint64) error {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	w.sent = max(w.sent, last)
	w.lasts = append(w.lasts, last)
	w.since = append(w.since, time.Now())
	w.mu.Unlock()
	return nil
}

// watch fails when the oldest batch in flight has waited longer than timeout and no
// ack arrived meanwhile.
func (w *window) watch(ctx context.Context, timeout time.Duration) error {
	t := time.NewTicker(timeout / 10)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		w.mu.Lock()
		stuck := len(w.since) > 0 && time.Since(w.since[0]) > timeout && time.Since(w.lastAck) > timeout
		w.mu.Unlock()
		if stuck {
			return fmt.Errorf("uplink: no ack for %s with batches in flight; reconnecting", timeout)
		}
	}
}

// release frees the slots of the batches committed covers. An ack beyond what was sent
// is a protocol error: deleting those seqs would lose events.
func (w *window) release(committed uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if committed > w.sent {
		return fmt.Errorf("%w: the control plane acknowledged seq %d, but this stream sent only up to seq %d; nothing is deleted", ErrProtocol, committed, w.sent)
	}
	w.lastAck = time.Now()
	for len(w.lasts) > 0 && w.lasts[0] <= committed {
		w.lasts, w.since = w.lasts[1:], w.since[1:]
		<-w.slots
	}
	return nil
}
