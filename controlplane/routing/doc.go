// Package routing reads, validates and compiles the control plane's routing documents
// (Destination, Route and Policy) and evaluates routes on committed events.
//
// # Documents
//
// Documents are YAML with apiVersion crossdock.io/v1, a kind, metadata.name and a spec
// (see docs/routing.md for the reference). [Parse] reads a stream of them separated by
// "---", validates each field and compiles every CEL expression; problems come back as
// one [*ValidationError] whose lines name the document and the field:
//
//	routes/amazon-inventory: spec.match.types[1]: unknown event type "inventry.level"
//
// [Document.Canonical] is the stored form (YAML with sorted keys), so re-applying the
// same content is "unchanged". Webhook secrets may be ${env:NAME} / ${file:PATH} in a
// file: the CLI calls [ResolveSecrets]; the API refuses unresolved ones
// ([RequireResolved]). [Document.Masked] and [MaskSecret] hide secrets for display.
//
// # CEL
//
// Filters and mappings are CEL expressions over two variables typed by the canonical
// protos (cel.Types, not maps), so field names are the .proto names in snake_case and
// misspelt fields fail at apply time:
//
//	event      crossdock.event.v1.Event           event.type, event.keys.sku,
//	                                              event.inventory_level.on_hand, event.id
//	committed  crossdock.event.v1.CommittedEvent  committed.seq, committed.committed_at,
//	                                              committed.agent, committed.agent_seq
//
// An unset message field reads as its zero value; use has(event.inventory_level) to test
// which payload is present. A mapping's value (map with string keys, list, string,
// number, bool, null, timestamp, message) becomes the payload as JSON: timestamps as RFC
// 3339, messages in protojson with snake_case names, map keys sorted. Every evaluation
// is bounded by [CostLimit] and [EvalTimeout]; see [Env] for the libraries available.
//
// # API for the delivery engine
//
// The engine builds a [Table] from the stored documents with [Load] (a
// *ledger.Ledger is a [DocumentSource]) and rebuilds it when the ledger's
// DocumentsRevision moves (the ledger's Changed channel fires after every document
// change). A Table is immutable and safe for concurrent use:
//
//	t.Destinations()          every destination, with its effective Policy
//	t.Policy(dest)            the destination's Policy (defaults filled: DefaultPolicy)
//	t.RoutesFor(dest)         the routes delivering to dest
//	r.Evaluate(ce)            (matched, payload JSON, err)
//
// A failing filter or mapping returns an [*EvalError] (Route, Stage, and an error
// wrapping [ErrCostLimit], [ErrTimeout], [ErrPayload] or CEL's own error): dead-letter
// the event with err.Error() as the reason. `crossdock routes test` shows the same text.
package routing

import "errors"

// ErrInvalid is wrapped by every *ValidationError: a document the control plane refuses.
var ErrInvalid = errors.New("invalid routing document")
