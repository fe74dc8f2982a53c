package routing

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/google/cel-go/common/types"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Policy is a destination's effective policy: its Policy document with the defaults
// filled in (DefaultPolicy when the destination names none).
type Policy struct {
	// Name of the Policy document; "" for DefaultPolicy.
	Name string
	// RatePerSecond is the token bucket's rate; 0 means unlimited. Burst is its size.
	RatePerSecond float64
	Burst         int
	// Coalesce keeps only the newest queued event per coalescing key: the values of the
	// CoalesceBy business keys (all of the event's keys when empty) and the event type.
	Coalesce   bool
	CoalesceBy []string
	// BatchMaxEvents > 1 sends up to that many events in one request (webhooks that
	// accept batches), waiting at most BatchMaxWait for a batch to fill.
	BatchMaxEvents int
	BatchMaxWait   time.Duration
	// MaxAttempts is how many deliveries are tried before the event is dead-lettered;
	// the wait between them grows exponentially (with jitter) from InitialBackoff to
	// MaxBackoff, or follows Retry-After.
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// The circuit opens after FailureThreshold consecutive failures and is probed again
	// after Cooldown.
	FailureThreshold int
	Cooldown         time.Duration
}

// DefaultPolicy applies to a destination without a policy, and fills what a Policy
// document leaves out: no rate limit, no coalescing, no batching, 10 attempts with
// backoff from 500ms to 5m, a circuit that opens after 5 consecutive failures for 30s.
// A rate limit without a burst gets a burst of one second's worth (at least 1); a batch
// without maxWait waits 1s.
//
// It is the only definition of the defaults: the delivery engine sends under a Policy
// (delivery imports routing, never the reverse), and docs/routing.md's Policy table is
// checked against it (TestDocsPolicyDefaults). Why these values: ten attempts, waiting
// from 500ms doubling (with jitter), spread over two to four minutes, more with
// Retry-After or an open circuit: long enough to ride out a receiver's deploy or restart
// before dead-lettering, short enough that a refused event reaches the DLQ while
// someone still remembers the change that broke it. Five straight failures are enough
// to call an endpoint down, and a 30s cooldown probes a down endpoint twice a minute
// rather than hammering it.
var DefaultPolicy = Policy{
	BatchMaxEvents:   1,
	BatchMaxWait:     time.Second,
	MaxAttempts:      10,
	InitialBackoff:   500 * time.Millisecond,
	MaxBackoff:       5 * time.Minute,
	FailureThreshold: 5,
	Cooldown:         30 * time.Second,
}

// EffectivePolicy fills s's absent fields from DefaultPolicy.
func EffectivePolicy(name string, s *PolicySpec) Policy {
	p := DefaultPolicy
	p.Name = name
	if s == nil {
		return p
	}
	if r := s.RateLimit; r != nil {
		p.RatePerSecond = r.PerSecond
		p.Burst = r.Burst
		if p.Burst == 0 {
			p.Burst = max(1, int(math.Ceil(r.PerSecond)))
		}
	}
	if c := s.Coalesce; c != nil && c.Enabled {
		p.Coalesce = true
		p.CoalesceBy = slices.Clone(c.By)
	}
	if b := s.Batch; b != nil {
		p.BatchMaxEvents = b.MaxEvents
		if b.MaxWait != nil {
			p.BatchMaxWait = b.MaxWait.Duration
		}
	}
	if r := s.Retry; r != nil {
		if r.MaxAttempts > 0 {
			p.MaxAttempts = r.MaxAttempts
		}
		if r.InitialBackoff != nil {
			p.InitialBackoff = r.InitialBackoff.Duration
		}
		if r.MaxBackoff != nil {
			p.MaxBackoff = r.MaxBackoff.Duration
		}
		p.MaxBackoff = max(p.MaxBackoff, p.InitialBackoff)
	}
	if c := s.CircuitBreaker; c != nil {
		if c.FailureThreshold > 0 {
			p.FailureThreshold = c.FailureThreshold
		}
		if c.Cooldown != nil {
			p.Cooldown = c.Cooldown.Duration
		}
	}
	return p
}

// WithDefaults fills p's zero fields from DefaultPolicy, as EffectivePolicy does for
// absent sections of a document; for policies built in code (tests, benchmarks).
func (p Policy) WithDefaults() Policy {
	d := DefaultPolicy
	if p.RatePerSecond > 0 && p.Burst <= 0 {
		p.Burst = max(1, int(math.Ceil(p.RatePerSecond)))
	}
	if p.BatchMaxEvents <= 0 {
		p.BatchMaxEvents = d.BatchMaxEvents
	}
	if p.BatchMaxWait <= 0 {
		p.BatchMaxWait = d.BatchMaxWait
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	p.MaxBackoff = max(p.MaxBackoff, p.InitialBackoff)
	if p.FailureThreshold <= 0 {
		p.FailureThreshold = d.FailureThreshold
	}
	if p.Cooldown <= 0 {
		p.Cooldown = d.Cooldown
	}
	return p
}

// Destination is a compiled Destination document.
type Destination struct {
	Name string
	// Version of the document in the store (0 for a document not stored yet).
	Version uint64
	Spec    DestinationSpec
	// Timeout of one webhook request (DefaultTimeout when the document sets none).
	Timeout time.Duration
	Policy  Policy
}

// Route is a compiled Route document. It is safe for concurrent use.
type Route struct {
	Name    string
	Version uint64
	Spec    RouteSpec
	// Destinations the route delivers to, in the document's order.
	Destinations []string
	prg          *compiled
}

// Table is a consistent set of compiled documents: every route's destinations and every
// destination's policy exist. It is immutable and safe for concurrent use; build a new
// one when the documents change.
type Table struct {
	dests    map[string]*Destination
	routes   map[string]*Route
	policies map[string]Policy
	byDest   map[string][]*Route
	revision uint64
}

// NewTable compiles docs into a Table. Versions (from the store) may be nil. It fails
// with a *ValidationError when a route names a missing destination or a destination a
// missing policy, or when a policy batches for a webhook that does not accept batches.
func NewTable(docs []*Document, versions map[string]uint64) (*Table, error) {
	t := &Table{dests: map[string]*Destination{}, routes: map[string]*Route{}, policies: map[string]Policy{}, byDest: map[string][]*Route{}}
	specs := map[string]*PolicySpec{}
	for _, d := range docs {
		if d.Kind == KindPolicy {
			specs[d.Name()] = d.Policy
			t.policies[d.Name()] = EffectivePolicy(d.Name(), d.Policy)
		}
	}
	var errs []*FieldError
	for _, d := range docs {
		switch d.Kind {
		case KindDestination:
			s := *d.Destination
			dst := &Destination{Name: d.Name(), Version: versions[d.Ref()], Spec: s, Timeout: DefaultTimeout, Policy: EffectivePolicy("", nil)}
			if s.Timeout != nil {
				dst.Timeout = s.Timeout.Duration
			}
			if s.Policy != "" {
				p, ok := t.policies[s.Policy]
				if !ok {
					errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.policy", Msg: fmt.Sprintf("no policy %q (apply it, or remove the reference)", s.Policy)})
				}
				dst.Policy = p
				if ok && p.BatchMaxEvents > 1 && s.Type == DestinationWebhook && !s.AcceptsBatches {
					errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.acceptsBatches", Msg: fmt.Sprintf("policy %q batches up to %d events but this webhook does not accept batches (set acceptsBatches: true)", s.Policy, p.BatchMaxEvents)})
				}
			}
			t.dests[d.Name()] = dst
		case KindRoute:
			r, err := newRoute(d, versions[d.Ref()])
			if err != nil {
				errs = append(errs, err.Errors...)
				continue
			}
			t.routes[d.Name()] = r
		}
	}
	errs = append(errs, checkPartnerRefs(docs)...)
	errs = append(errs, checkAlertRefs(docs)...)
	errs = append(errs, checkTradingPartnerRefs(docs)...)
	for _, r := range t.sortedRoutes() {
		for i, dn := range r.Destinations {
			if _, ok := t.dests[dn]; !ok {
				path := "spec.destination"
				if len(r.Spec.Destinations) > 0 {
					path = fmt.Sprintf("spec.destinations[%d]", i)
				}
				errs = append(errs, &FieldError{Doc: KindRoute.Plural() + "/" + r.Name, Path: path, Msg: fmt.Sprintf("no destination %q (apply it, or fix the name)", dn)})
				continue
			}
			t.byDest[dn] = append(t.byDest[dn], r)
		}
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Doc < errs[j].Doc })
		return nil, &ValidationError{Errors: errs}
	}
	return t, nil
}

// NewRoute compiles one Route document on its own, without checking that its
// destinations exist (for testing a route before it is applied).
func NewRoute(d *Document, version uint64) (*Route, error) {
	if d.Kind != KindRoute || d.Route == nil {
		return nil, fmt.Errorf("routing: %s is not a Route", d.Ref())
	}
	r, err := newRoute(d, version)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func newRoute(d *Document, version uint64) (*Route, *ValidationError) {
	prg := d.compiled
	if prg == nil {
		var errs []*FieldError
		if prg, errs = compileRoute(d); len(errs) > 0 {
			return nil, &ValidationError{Errors: errs}
		}
	}
	r := &Route{Name: d.Name(), Version: version, Spec: *d.Route, prg: prg}
	r.Destinations = d.Route.Destinations
	if d.Route.Destination != "" {
		r.Destinations = []string{d.Route.Destination}
	}
	return r, nil
}

// DocumentSource is where Load reads stored documents; *ledger.Ledger is one.
type DocumentSource interface {
	Documents(kind string) ([]*storev1.DocumentRecord, error)
	DocumentsRevision() (uint64, error)
}

// Load builds the Table of the documents stored in src. Table.Revision tells which
// revision it reflects; rebuild when src's revision moves.
func Load(src DocumentSource) (*Table, error) {
	rev, err := src.DocumentsRevision()
	if err != nil {
		return nil, fmt.Errorf("routing: load: %w", err)
	}
	var docs []*Document
	versions := map[string]uint64{}
	for _, k := range Kinds {
		recs, err := src.Documents(string(k))
		if err != nil {
			return nil, fmt.Errorf("routing: load %s: %w", k.Plural(), err)
		}
		for _, rec := range recs {
			d, err := FromRecord(rec)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d)
			versions[d.Ref()] = rec.GetVersion()
		}
	}
	t, err := NewTable(docs, versions)
	if err != nil {
		return nil, fmt.Errorf("routing: stored documents: %w", err)
	}
	t.revision = rev
	return t, nil
}

// FromRecord parses a stored document version. A tombstone is an error.
func FromRecord(rec *storev1.DocumentRecord) (*Document, error) {
	if rec.GetDeleted() {
		return nil, fmt.Errorf("routing: %s/%s version %d is a deletion", rec.GetKind(), rec.GetName(), rec.GetVersion())
	}
	d, err := ParseOne(rec.GetContent())
	if err != nil {
		return nil, fmt.Errorf("routing: stored %s %s version %d: %w", rec.GetKind(), rec.GetName(), rec.GetVersion(), err)
	}
	if string(d.Kind) != rec.GetKind() || d.Name() != rec.GetName() {
		return nil, fmt.Errorf("routing: stored %s %s holds %s", rec.GetKind(), rec.GetName(), d.Ref())
	}
	return d, nil
}

// Revision is the documents revision the table was loaded at (0 when built by NewTable).
func (t *Table) Revision() uint64 { return t.revision }

// Destinations returns every destination, sorted by name.
func (t *Table) Destinations() []*Destination {
	out := make([]*Destination, 0, len(t.dests))
	for _, n := range sortedKeys(t.dests) {
		out = append(out, t.dests[n])
	}
	return out
}

// Destination returns one destination.
func (t *Table) Destination(name string) (*Destination, bool) {
	d, ok := t.dests[name]
	return d, ok
}

// Policy returns the effective policy of a destination (DefaultPolicy for an unknown
// destination).
func (t *Table) Policy(dest string) Policy {
	if d, ok := t.dests[dest]; ok {
		return d.Policy
	}
	return DefaultPolicy
}

// Routes returns every route, sorted by name.
func (t *Table) Routes() []*Route { return t.sortedRoutes() }

func (t *Table) sortedRoutes() []*Route {
	out := make([]*Route, 0, len(t.routes))
	for _, n := range sortedKeys(t.routes) {
		out = append(out, t.routes[n])
	}
	return out
}

// Route returns one route.
func (t *Table) Route(name string) (*Route, bool) {
	r, ok := t.routes[name]
	return r, ok
}

// RoutesFor returns the routes that deliver to dest, sorted by name.
func (t *Table) RoutesFor(dest string) []*Route { return t.byDest[dest] }

// Matches reports whether ev passes the route's match (types and keys). It is cheap and
// never fails; Evaluate applies it first.
func (r *Route) Matches(ev *eventv1.Event) bool {
	if len(r.Spec.Match.Types) > 0 && !slices.Contains(r.Spec.Match.Types, ev.GetType()) {
		return false
	}
	for k, pat := range r.Spec.Match.Keys {
		v, ok := ev.GetKeys()[k]
		if !ok || !globMatch(pat, v) {
			return false
		}
	}
	return true
}

// Selects reports whether the route takes ce: match, then filter, without the mapping
// (the timeline asks which destinations an event goes to). A failing filter is an
// *EvalError with selected true, as in Evaluate.
func (r *Route) Selects(ce *eventv1.CommittedEvent) (selected bool, err error) {
	if !r.Matches(ce.GetEvent()) {
		return false, nil
	}
	if r.prg.filter == nil {
		return true, nil
	}
	v, err := evaluate(context.Background(), r.prg.filter, ce)
	if err != nil {
		return true, &EvalError{Route: r.Name, Stage: "filter", Err: err}
	}
	b, ok := v.(types.Bool)
	return !ok || bool(b), nil
}

// Evaluate runs the route on a committed event: match, then filter, then mapping.
// matched is false when the event is not for this route (payload nil, err nil). A
// failing filter or mapping returns matched true and an *EvalError (wrapping
// ErrCostLimit, ErrTimeout, ErrPayload or CEL's error), which the delivery engine
// dead-letters with err.Error() as the reason. Without a mapping the payload is
// EventJSON(ce.Event).
func (r *Route) Evaluate(ce *eventv1.CommittedEvent) (matched bool, payload []byte, err error) {
	return r.EvaluateContext(context.Background(), ce)
}

// EvaluateContext is Evaluate with a context; the evaluation also stops at EvalTimeout.
func (r *Route) EvaluateContext(ctx context.Context, ce *eventv1.CommittedEvent) (matched bool, payload []byte, err error) {
	if !r.Matches(ce.GetEvent()) {
		return false, nil, nil
	}
	if r.prg.filter != nil {
		v, err := evaluate(ctx, r.prg.filter, ce)
		if err != nil {
			return true, nil, &EvalError{Route: r.Name, Stage: "filter", Err: err}
		}
		b, ok := v.(types.Bool)
		if !ok {
			return true, nil, &EvalError{Route: r.Name, Stage: "filter", Err: fmt.Errorf("filter returned %s, not bool", v.Type().TypeName())}
		}
		if !b {
			return false, nil, nil
		}
	}
	if r.prg.mapping == nil {
		b, err := EventJSON(ce.GetEvent())
		if err != nil {
			return true, nil, &EvalError{Route: r.Name, Stage: "mapping", Err: fmt.Errorf("%w: %v", ErrPayload, err)}
		}
		return true, b, nil
	}
	v, err := evaluate(ctx, r.prg.mapping, ce)
	if err != nil {
		return true, nil, &EvalError{Route: r.Name, Stage: "mapping", Err: err}
	}
	b, err := payloadJSON(v)
	if err != nil {
		return true, nil, &EvalError{Route: r.Name, Stage: "mapping", Err: fmt.Errorf("%w: %v", ErrPayload, err)}
	}
	return true, b, nil
}
