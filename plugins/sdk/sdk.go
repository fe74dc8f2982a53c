// Package sdk is what a connector author needs: implement Source and/or Sink, then call
// Serve from main. The agent launches the binary as a hashicorp/go-plugin subprocess and
// talks to it over gRPC (proto/crossdock/plugin/v1); the author never sees either.
//
// The contract, in the words of the design's promises:
//
//   - A Source captures changes and emits them in batches, each batch with the source
//     position reached after it. The agent appends the events and the position in one
//     outbox transaction (fsynced) before it calls Ack with that position; only then may
//     the source tell the upstream system the changes are safe (confirm an LSN, delete a
//     staging row). After a crash the agent reopens the source from the last committed
//     position, so a source must be able to resume from any position it emitted.
//   - A Sink writes a batch of events into a system and must be idempotent by event id:
//     the same event may be written twice after a crash or a retry, and the second write
//     must change nothing.
//
// Events are canonical (proto/crossdock/event/v1). A source leaves Event.Id and
// Event.Source empty: the agent fills them in from the agent id, connector name and the
// record's position, so ids are deterministic across restarts.
package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Spec describes a connector: shown by `crossdock plugin ls` and checked by the host.
type Spec struct {
	// Name is the connector type, e.g. "sql", "pgcdc", "tryton".
	Name string
	// Version is the connector's own version.
	Version string
	// Source and Sink say which roles the plugin implements.
	Source, Sink bool
	// Description is one line for humans.
	Description string
}

// Batch is what a source emits: events, in source order, and the position reached after
// the last of them.
type Batch struct {
	Events []*eventv1.Event
	// Position is opaque to the agent (an LSN, "updated_at|key", a file offset). It is
	// passed back to Read after a restart and to Ack once the batch is durable.
	Position string
	// EventPositions optionally gives each event its own position (same length as
	// Events); used to derive per-event ids. When nil, event i gets Position + "#" + i.
	EventPositions []string
}

// Emit hands a batch to the agent. It blocks while the agent is busy (back-pressure) and
// returns an error when the source must stop (the agent is shutting down or the outbox
// refused the batch); Read should then return.
type Emit func(ctx context.Context, b Batch) error

// Source captures changes from a system.
type Source interface {
	// Read streams batches starting after position from ("" means from the beginning, or
	// wherever the connector's settings say a fresh start begins) until ctx ends or an
	// unrecoverable error occurs. It is called again after a crash or an error, with the
	// last position the agent committed.
	Read(ctx context.Context, from string, emit Emit) error
	// Ack says every batch up to and including the one with this position is durable in
	// the outbox. Sources that need not tell anyone may ignore it.
	Ack(ctx context.Context, position string) error
}

// WriteResult is a sink's answer for one event.
type WriteResult struct {
	// EventID echoes the event written.
	EventID string
	// Ref is what the target system calls the result (e.g. the ERP's order number).
	Ref string
	// Err, when set, says this event was not written. Wrap ErrPermanent when a retry
	// cannot help (bad data); anything else is retried.
	Err error
}

// Sink writes events into a system.
type Sink interface {
	// Write writes events, idempotently by event id, and returns one result per event in
	// the same order. A returned error means the whole batch failed and may be retried.
	Write(ctx context.Context, events []*eventv1.Event) ([]WriteResult, error)
}

// Connector is implemented by every plugin. Configure is called once, before Read or
// Write, with the connector's settings from the agent's config file as JSON (secrets
// already resolved by the agent). It returns a *ConfigError naming the bad field.
type Connector interface {
	Spec() Spec
	Configure(ctx context.Context, settings []byte) error
	// Health reports whether the connector can reach its system right now.
	Health(ctx context.Context) error
	// Close releases connections. It is called once, when the plugin stops.
	Close() error
}

// ErrPermanent marks errors a retry cannot fix.
var ErrPermanent = errors.New("permanent error")

// Permanent wraps err as permanent.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Reason is err's message without the "permanent error: " marks Permanent put in front
// (once in the plugin, once again on the host's side of the plugin boundary): what the
// target system said, for people (an order.ack's message).
func Reason(err error) string {
	msg := err.Error()
	for {
		rest, ok := strings.CutPrefix(msg, ErrPermanent.Error()+": ")
		if !ok {
			return msg
		}
		msg = rest
	}
}

// ConfigError is a settings error: the field's path (e.g. "tables[0].key") and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }
