package routing

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// KindRetention is the kind of the Retention document: how long the ledger keeps
// events, per type, which types keep their newest event per keys when pruned, and how
// long a re-sent event id is still recognised as a duplicate (docs/operations.md,
// "Retention"). There is one, named RetentionName; without it DefaultRetention applies.
const KindRetention Kind = "Retention"

// RetentionName is the only name a Retention document may have.
const RetentionName = "default"

// MinDedupWindow is the shortest dedupWindow accepted. Re-sent outbox entries are
// recognised by their outbox seq whatever the window (the agent's record is never
// pruned); the window covers the same event read again from its source under a new
// outbox seq (a connector restarted from an older position, a re-read of a day). The
// default (720h) covers a month of such re-reads; the floor of a minute lets a test or
// a soak benchmark bound the id index to a short window, and is documented as unsafe
// for production.
const MinDedupWindow = time.Minute

// RetentionSpec is the spec of the Retention document.
type RetentionSpec struct {
	// Default is the rule of the types no rule of Types lists.
	Default *RetentionRule `json:"default,omitempty"`
	// Types are rules for listed types; a type is in at most one.
	Types []RetentionTypes `json:"types"` // no omitempty: `types: []` (every type by default) must survive storage
	// Compact lists types whose newest pruned event per (type, keys) survives pruning
	// (the base views start from).
	Compact []string `json:"compact"` // likewise `compact: []`
	// DedupWindow is how long after its commit a re-sent event id is still recognised
	// as a duplicate; at least MinDedupWindow.
	DedupWindow *Duration `json:"dedupWindow,omitempty"`
}

// RetentionRule keeps events for Keep after their commit.
type RetentionRule struct {
	Keep *Duration `json:"keep,omitempty"`
	// MaxBytes is refused by this build (a size cap is not enforced yet).
	MaxBytes string `json:"maxBytes,omitempty"`
}

// RetentionTypes is a rule for some types.
type RetentionTypes struct {
	Types    []string  `json:"types"`
	Keep     *Duration `json:"keep,omitempty"`
	MaxBytes string    `json:"maxBytes,omitempty"`
}

// Retention is the effective retention: every duration set.
type Retention struct {
	Default     time.Duration
	Types       map[string]time.Duration
	Compact     []string
	DedupWindow time.Duration
}

// Keep is how long events of typ are kept.
func (r Retention) Keep(typ string) time.Duration {
	if d, ok := r.Types[typ]; ok {
		return d
	}
	return r.Default
}

// Defaults of the Retention document (docs/operations.md).
const (
	DefaultKeep        = 720 * time.Hour
	DefaultDedupWindow = 720 * time.Hour
)

// DefaultRetention is the retention when no Retention document is applied: the
// document shown in docs/operations.md.
func DefaultRetention() Retention {
	const twoYears = 17520 * time.Hour
	return Retention{
		Default: DefaultKeep,
		Types: map[string]time.Duration{
			"inventory.level": 168 * time.Hour,
			"order":           twoYears, "order.ack": twoYears, "shipment": twoYears, "invoice": twoYears, "sales.return": twoYears,
			"order.cancel": twoYears, "order.status": twoYears,
		},
		Compact:     []string{"inventory.level", "item", "price"},
		DedupWindow: DefaultDedupWindow,
	}
}

// EffectiveRetention is the retention of a Retention spec (nil: DefaultRetention).
// Absent fields take DefaultRetention's; types and compact, when set, replace the
// defaults' lists.
func EffectiveRetention(s *RetentionSpec) Retention {
	r := DefaultRetention()
	if s == nil {
		return r
	}
	if s.Default != nil && s.Default.Keep != nil {
		r.Default = s.Default.Keep.Duration
	}
	if s.Types != nil {
		r.Types = map[string]time.Duration{}
		for _, rule := range s.Types {
			for _, t := range rule.Types {
				if rule.Keep != nil {
					r.Types[t] = rule.Keep.Duration
				}
			}
		}
	}
	if s.Compact != nil {
		r.Compact = slices.Sorted(slices.Values(s.Compact))
	}
	if s.DedupWindow != nil {
		r.DedupWindow = s.DedupWindow.Duration
	}
	return r
}

func validateRetention(p *problems, d *Document) {
	s := d.Retention
	if d.Name() != RetentionName {
		p.add("metadata.name", "a Retention document must be named %q (there is one per cluster)", RetentionName)
	}
	keep := func(path string, k *Duration, maxBytes string, required bool) {
		switch {
		case k == nil && required:
			p.add(path+".keep", "required (a duration such as \"168h\")")
		case k != nil && k.Duration <= 0:
			p.add(path+".keep", "must be more than 0, got %s", k.Duration)
		}
		if maxBytes != "" {
			p.add(path+".maxBytes", "is not enforced by this build (retention is by time only: a size cap is not computed from committed data yet); remove it and set keep from the event rate (see \"Retention\" in docs/operations.md)")
		}
	}
	if s.Default != nil {
		keep("spec.default", s.Default.Keep, s.Default.MaxBytes, false)
	}
	seen := map[string]string{}
	for i, rule := range s.Types {
		path := fmt.Sprintf("spec.types[%d]", i)
		keep(path, rule.Keep, rule.MaxBytes, true)
		if len(rule.Types) == 0 {
			p.add(path+".types", "required: the event types this rule keeps")
		}
		for j, t := range rule.Types {
			tp := fmt.Sprintf("%s.types[%d]", path, j)
			switch {
			case !slices.Contains(EventTypes, t):
				p.add(tp, "unknown event type %q (known: %s)", t, strings.Join(EventTypes, ", "))
			case seen[t] != "":
				p.add(tp, "type %q is already kept by %s; a type is in one rule", t, seen[t])
			default:
				seen[t] = path
			}
		}
	}
	for i, t := range s.Compact {
		tp := fmt.Sprintf("spec.compact[%d]", i)
		switch {
		case !slices.Contains(EventTypes, t):
			p.add(tp, "unknown event type %q (known: %s)", t, strings.Join(EventTypes, ", "))
		case slices.Index(s.Compact, t) < i:
			p.add(tp, "type %q is listed twice", t)
		}
	}
	if w := s.DedupWindow; w != nil && w.Duration < MinDedupWindow {
		p.add("spec.dedupWindow", "must be at least %s (a re-sent event id is recognised as a duplicate for this long after its commit), got %s", MinDedupWindow, w.Duration)
	}
}

// retentionSummary is the one-line summary of a Retention document.
func retentionSummary(s *RetentionSpec) string {
	r := EffectiveRetention(s)
	parts := []string{"default=" + r.Default.String()}
	for _, t := range slices.Sorted(maps.Keys(r.Types)) {
		parts = append(parts, t+"="+r.Types[t].String())
	}
	if len(r.Compact) > 0 {
		parts = append(parts, "compact="+strings.Join(r.Compact, ","))
	}
	return strings.Join(append(parts, "dedup="+r.DedupWindow.String()), " ")
}
