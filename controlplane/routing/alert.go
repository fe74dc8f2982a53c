package routing

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// KindAlert is the kind of Alert documents: a condition the leader evaluates on an
// interval, with thresholds (per partner tier if wanted) and the webhook destinations
// that receive Alertmanager-compatible notifications (docs/observability.md, "Alerts").
const KindAlert Kind = "Alert"

// Alert conditions.
const (
	// Destination conditions (selectors destinations, partners).
	ConditionDestinationLag = "destinationLag" // lagEvents and/or lagAge
	ConditionErrorRate      = "errorRate"      // errorRatio of the attempts in window
	ConditionDeadLetters    = "deadLetters"    // unresolved dead letters >= deadLetters
	ConditionBreakerOpen    = "breakerOpen"    // the circuit breaker is open
	// Agent conditions (selectors agents, connectors).
	ConditionAgentOffline     = "agentOffline"     // no stream for offlineFor
	ConditionConnectorStalled = "connectorStalled" // stalled, restarting or failed for stalledFor
	// Partner conditions (selector partners).
	ConditionInventoryStale = "inventoryStale" // no inventory.level the partner sees for staleFor
	ConditionEDIAckOverdue  = "ediAckOverdue"  // overdue EDI acknowledgements >= overdueAcks
)

// AlertConditions lists every condition, in documentation order.
var AlertConditions = []string{ConditionDestinationLag, ConditionErrorRate, ConditionDeadLetters, ConditionBreakerOpen,
	ConditionAgentOffline, ConditionConnectorStalled, ConditionInventoryStale, ConditionEDIAckOverdue}

// Alert severities.
const (
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Defaults of an Alert document.
const (
	DefaultAlertWindow      = 5 * time.Minute
	MinAlertWindow          = 10 * time.Second
	MaxAlertWindow          = time.Hour
	DefaultAlertMinAttempts = 10
	DefaultAlertOfflineFor  = time.Minute
	DefaultAlertStalledFor  = 5 * time.Minute
)

// AlertSpec is the spec of an Alert.
type AlertSpec struct {
	// Condition is one of AlertConditions.
	Condition string `json:"condition"`
	// Severity is warning (default) or critical; sent as the severity label.
	Severity string `json:"severity,omitempty"`
	// Selectors: globs (* and ?) of the names watched; empty watches all. Which apply
	// depends on the condition.
	Destinations []string `json:"destinations,omitempty"`
	Partners     []string `json:"partners,omitempty"`
	Agents       []string `json:"agents,omitempty"`
	Connectors   []string `json:"connectors,omitempty"`
	// Threshold is the default threshold; Tiers overrides its fields for the partners
	// of a Tier (a destination's partner is the Partner document listing it).
	Threshold *AlertThreshold            `json:"threshold,omitempty"`
	Tiers     map[string]*AlertThreshold `json:"tiers,omitempty"`
	// For is how long the condition must hold before the alert fires (default 0: at
	// the first evaluation that sees it).
	For *Duration `json:"for,omitempty"`
	// Window is the errorRate measuring window (DefaultAlertWindow).
	Window *Duration `json:"window,omitempty"`
	// Notify names webhook Destination documents that receive the notifications.
	Notify []string `json:"notify,omitempty"`
	// Summary is the summary annotation; a generated line when empty.
	Summary string `json:"summary,omitempty"`
}

// AlertThreshold holds the thresholds; each condition uses its own fields.
type AlertThreshold struct {
	LagEvents   int       `json:"lagEvents,omitempty"`
	LagAge      *Duration `json:"lagAge,omitempty"`
	ErrorRatio  float64   `json:"errorRatio,omitempty"`
	MinAttempts int       `json:"minAttempts,omitempty"`
	DeadLetters int       `json:"deadLetters,omitempty"`
	OfflineFor  *Duration `json:"offlineFor,omitempty"`
	StalledFor  *Duration `json:"stalledFor,omitempty"`
	StaleFor    *Duration `json:"staleFor,omitempty"`
	OverdueAcks int       `json:"overdueAcks,omitempty"`
}

// Threshold is an effective threshold: every field the condition uses is set.
type Threshold struct {
	LagEvents   int
	LagAge      time.Duration
	ErrorRatio  float64
	MinAttempts int
	DeadLetters int
	OfflineFor  time.Duration
	StalledFor  time.Duration
	StaleFor    time.Duration
	OverdueAcks int
}

// EffectiveThreshold is the threshold for a partner tier ("" for none): the tier's
// fields over the document's threshold over the defaults.
func (s *AlertSpec) EffectiveThreshold(tier string) Threshold {
	t := Threshold{MinAttempts: DefaultAlertMinAttempts, DeadLetters: 1, OfflineFor: DefaultAlertOfflineFor,
		StalledFor: DefaultAlertStalledFor, OverdueAcks: 1}
	over := func(a *AlertThreshold) {
		if a == nil {
			return
		}
		if a.LagEvents > 0 {
			t.LagEvents = a.LagEvents
		}
		if a.LagAge != nil {
			t.LagAge = a.LagAge.Duration
		}
		if a.ErrorRatio > 0 {
			t.ErrorRatio = a.ErrorRatio
		}
		if a.MinAttempts > 0 {
			t.MinAttempts = a.MinAttempts
		}
		if a.DeadLetters > 0 {
			t.DeadLetters = a.DeadLetters
		}
		if a.OfflineFor != nil {
			t.OfflineFor = a.OfflineFor.Duration
		}
		if a.StalledFor != nil {
			t.StalledFor = a.StalledFor.Duration
		}
		if a.StaleFor != nil {
			t.StaleFor = a.StaleFor.Duration
		}
		if a.OverdueAcks > 0 {
			t.OverdueAcks = a.OverdueAcks
		}
	}
	over(s.Threshold)
	if tier != "" {
		over(s.Tiers[tier])
	}
	return t
}

// ForDuration is spec.for (0 when absent).
func (s *AlertSpec) ForDuration() time.Duration {
	if s.For == nil {
		return 0
	}
	return s.For.Duration
}

// WindowDuration is spec.window or DefaultAlertWindow.
func (s *AlertSpec) WindowDuration() time.Duration {
	if s.Window == nil {
		return DefaultAlertWindow
	}
	return s.Window.Duration
}

// SeverityOrDefault is spec.severity or warning.
func (s *AlertSpec) SeverityOrDefault() string {
	if s.Severity == "" {
		return SeverityWarning
	}
	return s.Severity
}

// Selects reports whether name matches one of globs (every name when globs is empty).
func Selects(globs []string, name string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if globMatch(g, name) {
			return true
		}
	}
	return false
}

// alertFields says which selectors and threshold fields each condition takes.
var alertFields = map[string]struct {
	selectors  []string
	thresholds []string
	required   []string // one of these threshold fields must be set (in threshold or every tier)
}{
	ConditionDestinationLag:   {[]string{"destinations", "partners"}, []string{"lagEvents", "lagAge"}, []string{"lagEvents", "lagAge"}},
	ConditionErrorRate:        {[]string{"destinations", "partners"}, []string{"errorRatio", "minAttempts"}, []string{"errorRatio"}},
	ConditionDeadLetters:      {[]string{"destinations", "partners"}, []string{"deadLetters"}, nil},
	ConditionBreakerOpen:      {[]string{"destinations", "partners"}, nil, nil},
	ConditionAgentOffline:     {[]string{"agents"}, []string{"offlineFor"}, nil},
	ConditionConnectorStalled: {[]string{"agents", "connectors"}, []string{"stalledFor"}, nil},
	ConditionInventoryStale:   {[]string{"partners"}, []string{"staleFor"}, []string{"staleFor"}},
	ConditionEDIAckOverdue:    {[]string{"partners"}, []string{"overdueAcks"}, nil},
}

// setThresholdFields names the fields of a that are set.
func setThresholdFields(a *AlertThreshold) []string {
	if a == nil {
		return nil
	}
	var out []string
	add := func(name string, set bool) {
		if set {
			out = append(out, name)
		}
	}
	add("lagEvents", a.LagEvents != 0)
	add("lagAge", a.LagAge != nil)
	add("errorRatio", a.ErrorRatio != 0)
	add("minAttempts", a.MinAttempts != 0)
	add("deadLetters", a.DeadLetters != 0)
	add("offlineFor", a.OfflineFor != nil)
	add("stalledFor", a.StalledFor != nil)
	add("staleFor", a.StaleFor != nil)
	add("overdueAcks", a.OverdueAcks != 0)
	return out
}

func validateAlert(p *problems, s *AlertSpec) {
	f, ok := alertFields[s.Condition]
	if !ok {
		if s.Condition == "" {
			p.add("spec.condition", "required: one of %s", strings.Join(AlertConditions, ", "))
		} else {
			p.add("spec.condition", "unknown condition %q (known: %s)", s.Condition, strings.Join(AlertConditions, ", "))
		}
		return
	}
	if s.Severity != "" && s.Severity != SeverityWarning && s.Severity != SeverityCritical {
		p.add("spec.severity", "must be %s or %s, got %q", SeverityWarning, SeverityCritical, s.Severity)
	}
	for name, globs := range map[string][]string{"destinations": s.Destinations, "partners": s.Partners, "agents": s.Agents, "connectors": s.Connectors} {
		if len(globs) > 0 && !slices.Contains(f.selectors, name) {
			p.add("spec."+name, "not a selector of %s (it takes %s)", s.Condition, orNone(f.selectors))
		}
		for i, g := range globs {
			if g == "" || len(g) > 128 {
				p.add(fmt.Sprintf("spec.%s[%d]", name, i), "must be 1 to 128 characters")
			}
		}
	}
	tierAllowed := slices.Contains(f.selectors, "partners")
	if len(s.Tiers) > 0 && !tierAllowed {
		p.add("spec.tiers", "%s does not watch partners, so it has no tiers", s.Condition)
	}
	check := func(path string, a *AlertThreshold) {
		if a == nil {
			return
		}
		for _, name := range setThresholdFields(a) {
			if !slices.Contains(f.thresholds, name) {
				p.add(path+"."+name, "not a threshold of %s (it takes %s)", s.Condition, orNone(f.thresholds))
			}
		}
		for name, d := range map[string]*Duration{"lagAge": a.LagAge, "offlineFor": a.OfflineFor, "stalledFor": a.StalledFor, "staleFor": a.StaleFor} {
			if d != nil && d.Duration <= 0 {
				p.add(path+"."+name, "must be more than 0, got %s", d.Duration)
			}
		}
		for name, n := range map[string]int{"lagEvents": a.LagEvents, "minAttempts": a.MinAttempts, "deadLetters": a.DeadLetters, "overdueAcks": a.OverdueAcks} {
			if n < 0 {
				p.add(path+"."+name, "must not be negative, got %d", n)
			}
		}
		if a.ErrorRatio < 0 || a.ErrorRatio > 1 {
			p.add(path+".errorRatio", "must be more than 0 and at most 1 (0.05 is 5%%), got %g", a.ErrorRatio)
		}
	}
	check("spec.threshold", s.Threshold)
	for _, t := range sortedKeys(s.Tiers) {
		if t == "" || len(t) > 64 {
			p.add("spec.tiers", "tier names must be 1 to 64 characters")
		}
		check("spec.tiers."+t, s.Tiers[t])
	}
	if len(f.required) > 0 {
		has := func(a *AlertThreshold) bool {
			for _, n := range setThresholdFields(a) {
				if slices.Contains(f.required, n) {
					return true
				}
			}
			return false
		}
		if !has(s.Threshold) {
			p.add("spec.threshold", "required for %s: set %s", s.Condition, strings.Join(f.required, " or "))
		}
	}
	if s.For != nil && s.For.Duration < 0 {
		p.add("spec.for", "must not be negative, got %s", s.For.Duration)
	}
	if s.Window != nil {
		if s.Condition != ConditionErrorRate {
			p.add("spec.window", "only errorRate has a window")
		} else if s.Window.Duration < MinAlertWindow || s.Window.Duration > MaxAlertWindow {
			p.add("spec.window", "must be from %s to %s, got %s", MinAlertWindow, MaxAlertWindow, s.Window.Duration)
		}
	}
	for i, n := range s.Notify {
		if n == "" {
			p.add(fmt.Sprintf("spec.notify[%d]", i), "must name a webhook Destination")
		}
	}
	if len(s.Summary) > 1024 {
		p.add("spec.summary", "must be at most 1024 characters")
	}
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// checkAlertRefs reports Alert documents whose notify names a missing or non-webhook
// Destination, or whose tiers name a missing Tier.
func checkAlertRefs(docs []*Document) []*FieldError {
	tiers, dests := map[string]bool{}, map[string]*DestinationSpec{}
	for _, d := range docs {
		switch d.Kind {
		case KindTier:
			tiers[d.Name()] = true
		case KindDestination:
			dests[d.Name()] = d.Destination
		}
	}
	var errs []*FieldError
	for _, d := range docs {
		if d.Kind != KindAlert || d.Alert == nil {
			continue
		}
		for i, n := range d.Alert.Notify {
			path := fmt.Sprintf("spec.notify[%d]", i)
			switch ds, ok := dests[n]; {
			case !ok:
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: path, Msg: fmt.Sprintf("no destination %q (apply it, or fix the name)", n)})
			case ds.Type != DestinationWebhook:
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: path, Msg: fmt.Sprintf("destination %q is a %s destination; alerts are sent to webhook destinations", n, ds.Type)})
			}
		}
		for _, t := range sortedKeys(d.Alert.Tiers) {
			if !tiers[t] {
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.tiers." + t, Msg: fmt.Sprintf("no tier %q (apply it, or fix the name)", t)})
			}
		}
	}
	return errs
}

func alertSummary(s *AlertSpec) string {
	parts := []string{s.Condition, "severity=" + s.SeverityOrDefault()}
	t := s.EffectiveThreshold("")
	switch s.Condition {
	case ConditionDestinationLag:
		if t.LagEvents > 0 {
			parts = append(parts, fmt.Sprintf("events>=%d", t.LagEvents))
		}
		if t.LagAge > 0 {
			parts = append(parts, "age>="+t.LagAge.String())
		}
	case ConditionErrorRate:
		parts = append(parts, fmt.Sprintf("ratio>=%g/%s", t.ErrorRatio, s.WindowDuration()))
	case ConditionDeadLetters:
		parts = append(parts, fmt.Sprintf("dead>=%d", t.DeadLetters))
	case ConditionAgentOffline:
		parts = append(parts, "offline>="+t.OfflineFor.String())
	case ConditionConnectorStalled:
		parts = append(parts, "stalled>="+t.StalledFor.String())
	case ConditionInventoryStale:
		parts = append(parts, "stale>="+t.StaleFor.String())
	case ConditionEDIAckOverdue:
		parts = append(parts, fmt.Sprintf("overdue>=%d", t.OverdueAcks))
	}
	if len(s.Tiers) > 0 {
		parts = append(parts, "tiers="+strings.Join(sortedKeys(s.Tiers), ","))
	}
	if s.For != nil {
		parts = append(parts, "for="+s.For.Duration.String())
	}
	if len(s.Notify) > 0 {
		parts = append(parts, "notify="+strings.Join(s.Notify, ","))
	}
	return strings.Join(parts, " ")
}
