package delivery

import (
	"log/slog"
	"time"

	"github.com/crossdock/crossdock/internal/platform/ratelog"
)

// logFailure logs a failed attempt once, with the business keys of its first message
// and the destination, rate-limited per destination (a dead partner fails every
// message: the lines beyond the limit are counted on the next one written).
func (w *worker) logFailure(items []*item, res attemptResult, next string, retryIn time.Duration) {
	if len(items) == 0 {
		return
	}
	level := slog.LevelWarn
	if res.outcome == outcomeThrottled {
		level = slog.LevelInfo // the destination paces us: not its failure
	}
	args := w.messageArgs(items[0], len(items))
	args = append(args, "outcome", res.outcome.String(), "attempt", len(items[0].attempts), "next", next)
	if res.status != 0 {
		args = append(args, "status", res.status)
	}
	if retryIn > 0 {
		args = append(args, "retry_in", retryIn.Round(time.Millisecond))
	}
	args = append(args, "err", res.err)
	w.e.logs.Log(w.log, level, "failure:"+w.dest.Name, "delivery: attempt failed", args...)
}

// logBreaker logs a change of the destination's circuit breaker.
func (w *worker) logBreaker(was string, res attemptResult) {
	now := w.breaker.state
	if now == was {
		return
	}
	switch now {
	case BreakerOpen:
		w.e.logs.Log(w.log, slog.LevelWarn, "breaker:"+w.dest.Name, "delivery: circuit breaker open; nothing is sent to the destination until the cooldown ends",
			"was", was, "failures", w.breaker.failures, "cooldown", w.pol.Cooldown, "until", w.breaker.openUntil.UTC().Format(time.RFC3339), "err", res.err)
	case BreakerClosed:
		w.e.logs.Log(w.log, slog.LevelInfo, "breaker:"+w.dest.Name, "delivery: circuit breaker closed; the destination answers again", "was", was)
	}
}

// messageArgs names a message for the log: the destination, its event and business
// keys (key.sku, key.order ...), the route and the ledger seq.
func (w *worker) messageArgs(it *item, n int) []any {
	args := []any{"kind", w.dest.Kind}
	if w.dest.Kind == KindAgent {
		args = append(args, "agent", w.dest.Agent, "connector", w.dest.Connector)
	}
	args = append(args, "event_type", it.eventType, "event_id", it.eventID, "seq", it.seq, "route", it.route)
	args = append(args, ratelog.Keys(it.keys)...)
	if n > 1 {
		args = append(args, "messages", n)
	}
	return args
}
