package delivery

import (
	"sync"
	"time"
)

// DefaultAttemptLogSize is how many attempts and dead letterings the leader's attempt
// log keeps (Config.AttemptLogSize when 0): about 10 MB at most (an entry is a few
// hundred bytes, its error text capped by maxResponseKept).
const DefaultAttemptLogSize = 20000

// Attempt is one request of one message to a destination, or its dead lettering, as
// the attempt log keeps it.
type Attempt struct {
	At          time.Time
	Destination string
	Route       string
	Seq         uint64
	EventID     string
	// Kind is "attempt" or "dead_letter".
	Kind string
	// Outcome of an attempt: "ok", "retry", "throttled" or "permanent".
	Outcome string
	Status  int
	Error   string
	Took    time.Duration
	// Number is 1 for the first attempt of the message made by this node.
	Number       int
	ReplayID     string
	DeadLetterID string
}

// AttemptLog is a bounded, in-memory ring of the delivery attempts this node made
// while it led: what the business-key timeline shows between an event's commit and
// its cursor. It is not replicated and not persisted: a new leader starts empty and a
// restart forgets it; the oldest entries are overwritten once Size are held. Adding an
// entry takes a mutex and copies a small struct after the response arrived, so it
// does not slow delivery.
type AttemptLog struct {
	mu    sync.Mutex
	ring  []Attempt
	next  int
	full  bool
	total uint64
}

// NewAttemptLog returns a log holding the last size entries (DefaultAttemptLogSize
// when size <= 0).
func NewAttemptLog(size int) *AttemptLog {
	if size <= 0 {
		size = DefaultAttemptLogSize
	}
	return &AttemptLog{ring: make([]Attempt, size)}
}

func (l *AttemptLog) add(a Attempt) {
	l.mu.Lock()
	l.ring[l.next] = a
	l.next++
	l.total++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
	l.mu.Unlock()
}

// Size is the log's capacity.
func (l *AttemptLog) Size() int { return len(l.ring) }

// Stats returns how many entries were ever added and the time of the oldest still held
// (zero when empty).
func (l *AttemptLog) Stats() (total uint64, oldest time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.full:
		return l.total, l.ring[l.next].At
	case l.next > 0:
		return l.total, l.ring[0].At
	}
	return l.total, time.Time{}
}

// Find returns the held entries of the given seqs, oldest first.
func (l *AttemptLog) Find(seqs map[uint64]bool) []Attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Attempt
	take := func(from, to int) {
		for i := from; i < to; i++ {
			if l.ring[i].Destination != "" && seqs[l.ring[i].Seq] {
				out = append(out, l.ring[i])
			}
		}
	}
	if l.full {
		take(l.next, len(l.ring))
	}
	take(0, l.next)
	return out
}

// recordSend logs one request's result for each message it carried.
func (l *AttemptLog) recordSend(dest string, items []*item, res attemptResult, at time.Time) {
	if l == nil {
		return
	}
	for _, it := range items {
		l.add(Attempt{
			At: at, Destination: dest, Route: it.route, Seq: it.seq, EventID: it.eventID, Kind: "attempt",
			Outcome: res.outcome.String(), Status: res.status, Error: res.err, Took: res.took,
			Number: len(it.attempts) + 1, ReplayID: replayOf(it), DeadLetterID: it.dlID,
		})
	}
}

// recordDead logs messages dead-lettered with reason (ids: their dead letters).
func (l *AttemptLog) recordDead(dest string, items []*item, ids []string, reason string, at time.Time) {
	if l == nil {
		return
	}
	for i, it := range items {
		l.add(Attempt{
			At: at, Destination: dest, Route: it.route, Seq: it.seq, EventID: it.eventID, Kind: "dead_letter",
			Error: reason, Number: len(it.attempts), ReplayID: replayOf(it), DeadLetterID: ids[i],
		})
	}
}

func replayOf(it *item) string {
	if it.src != nil && it.src.replay != nil {
		return it.src.replay.GetReplay().GetId()
	}
	return ""
}

// Attempts is the engine's attempt log (Config.AttemptLogSize entries).
func (e *Engine) Attempts() *AttemptLog { return e.attempts }
