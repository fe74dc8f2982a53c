package delivery

import (
	"container/heap"
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// item is one message: an event mapped by one route for this destination.
type item struct {
	src       *source // nil for a dead letter being retried
	seq       uint64
	eventID   string
	eventType string
	keys      map[string]string
	route     string
	key       string // ordering (and coalescing) key
	msgID     string // idempotency key (webhook-id)
	payload   []byte
	event     *eventv1.Event        // agent destinations only
	trace     *eventv1.TraceContext // the event's trace context (from its publish span), if any
	mapErr    string
	attempts  []*storev1.DeliveryAttempt
	tries     int // attempts that count towards MaxAttempts (429s do not)
	notBefore time.Time
	readyAt   time.Time
	dlID      string // the dead letter this is a retry of
}

type keyQueue struct {
	items []*item
	busy  bool // the head is being sent or dead-lettered
}

// source is a stream of ledger events feeding the worker: the destination's own cursor,
// or a replay. Its watermark is the lowest seq not yet finished.
type source struct {
	replay  *storev1.ReplayRecord // nil for the destination's cursor
	next    uint64                // next seq to read
	end     uint64                // last seq to read (replays); 0 means no end
	filter  ledger.Filter
	routes  []Route
	pending map[uint64]int
	seqs    seqHeap
	items   int // queued messages (the sum of pending)
	readAll bool
	// sent holds the seqs of messages finished (sent or dead-lettered) at or above the
	// last committed cursor: what a new leader would send again. Reading stops while
	// items + sent reach the window, which bounds that re-send.
	sent     seqHeap
	proposed uint64 // the watermark of the flush in progress

	delivered, dead, coalesced uint64 // since the last flush
	flushed                    uint64
	doneFlushed                bool
}

func newSource(next uint64) *source {
	return &source{next: max(next, 1), pending: map[uint64]int{}, flushed: max(next, 1)}
}

func (s *source) track(seq uint64) {
	if s.pending[seq] == 0 {
		heap.Push(&s.seqs, seq)
	}
	s.pending[seq]++
	s.items++
}

func (s *source) untrack(seq uint64) {
	if s.pending[seq]--; s.pending[seq] <= 0 {
		delete(s.pending, seq)
	}
	s.items--
}

// outstanding counts the messages a new leader could send again: queued, in flight, or
// finished above the committed cursor.
func (s *source) outstanding() int { return s.items + s.sent.Len() }

// committed records that a cursor at wm is committed.
func (s *source) committed(wm uint64) {
	for s.sent.Len() > 0 && s.sent[0] < wm {
		heap.Pop(&s.sent)
	}
}

// watermark is the seq below which every event of the source is finished.
func (s *source) watermark() uint64 {
	for s.seqs.Len() > 0 {
		if top := s.seqs[0]; s.pending[top] > 0 {
			return top
		}
		heap.Pop(&s.seqs)
	}
	return s.next
}

func (s *source) done() bool { return s.replay != nil && s.readAll && len(s.pending) == 0 }

type seqHeap []uint64

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(uint64)) }
func (h *seqHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

type delayed struct {
	at  time.Time
	key string
}

type delayHeap []delayed

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayed)) }
func (h *delayHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
