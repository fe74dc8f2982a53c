package routing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/internal/edi"
)

// APIVersion is the apiVersion every document carries.
const APIVersion = "crossdock.io/v1"

// Kind is a document kind.
type Kind string

// Document kinds.
const (
	KindDestination Kind = "Destination"
	KindRoute       Kind = "Route"
	KindPolicy      Kind = "Policy"
)

// Kinds lists every document kind, in the order apply writes them (policies before the
// destinations that name them, destinations before the routes that name them).
var Kinds = []Kind{KindPolicy, KindDestination, KindRoute, KindRetention, KindTier, KindPartner, KindAlert, KindTradingPartner, KindAgentConfig}

// ParseKind accepts a kind as written in a document ("Route") or on the command line
// ("route", "routes").
func ParseKind(s string) (Kind, bool) {
	switch strings.ToLower(s) {
	case "destination", "destinations", "dest":
		return KindDestination, true
	case "route", "routes":
		return KindRoute, true
	case "policy", "policies":
		return KindPolicy, true
	case "retention", "retentions":
		return KindRetention, true
	case "partner", "partners":
		return KindPartner, true
	case "tier", "tiers":
		return KindTier, true
	case "alert", "alerts":
		return KindAlert, true
	case "tradingpartner", "tradingpartners", "trading-partner", "trading-partners":
		return KindTradingPartner, true
	case "agentconfig", "agentconfigs":
		return KindAgentConfig, true
	}
	return "", false
}

// Plural is the lower-case plural used in error prefixes ("routes/NAME").
func (k Kind) Plural() string {
	switch k {
	case KindPolicy:
		return "policies"
	case KindDestination:
		return "destinations"
	case KindRoute:
		return "routes"
	case KindRetention:
		return "retention"
	case KindPartner:
		return "partners"
	case KindTier:
		return "tiers"
	case KindAlert:
		return "alerts"
	case KindTradingPartner:
		return "tradingpartners"
	case KindAgentConfig:
		return "agentconfigs"
	}
	return strings.ToLower(string(k))
}

// Destination types.
const (
	DestinationWebhook = "webhook"
	DestinationStream  = "stream"
	DestinationAgent   = "agent"
)

// Document is one parsed document. Exactly one of Destination, Route and Policy is set,
// matching Kind.
type Document struct {
	APIVersion string   `json:"apiVersion"`
	Kind       Kind     `json:"kind"`
	Metadata   Metadata `json:"metadata"`

	Destination *DestinationSpec `json:"-"`
	Route       *RouteSpec       `json:"-"`
	Policy      *PolicySpec      `json:"-"`
	Retention   *RetentionSpec   `json:"-"`
	Partner     *PartnerSpec     `json:"-"`
	Tier        *TierSpec        `json:"-"`
	Alert       *AlertSpec       `json:"-"`
	// TradingPartner is an EDI profile (tradingpartner.go).
	TradingPartner *edi.Profile     `json:"-"`
	AgentConfig    *AgentConfigSpec `json:"-"`

	compiled *compiled // a Route's programs, set by Parse
}

// Metadata names a document.
type Metadata struct {
	Name string `json:"name"`
}

// Name is the document's metadata.name.
func (d *Document) Name() string { return d.Metadata.Name }

// Ref is "routes/NAME", the prefix of the document's error messages.
func (d *Document) Ref() string { return d.Kind.Plural() + "/" + d.Metadata.Name }

// DestinationSpec is the spec of a Destination. Which fields apply depends on Type.
type DestinationSpec struct {
	// Type is webhook, stream or agent.
	Type string `json:"type"`

	// webhook: the HTTPS endpoint, the Standard Webhooks signing secret ("whsec_" and
	// base64; ${env:NAME} or ${file:PATH} are resolved by the CLI before apply), extra
	// headers, the request timeout (default 10s) and whether the endpoint takes a JSON
	// array of several events in one request.
	URL            string            `json:"url,omitempty"`
	Secret         string            `json:"secret,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	Timeout        *Duration         `json:"timeout,omitempty"`
	AcceptsBatches bool              `json:"acceptsBatches,omitempty"`

	// stream: the partner whose event stream receives the events.
	Partner string `json:"partner,omitempty"`

	// agent: the agent and the connector (a sink) on it that receives the events.
	Agent     string `json:"agent,omitempty"`
	Connector string `json:"connector,omitempty"`

	// Policy names a Policy document; empty means DefaultPolicy.
	Policy string `json:"policy,omitempty"`
}

// RouteSpec is the spec of a Route.
type RouteSpec struct {
	Match Match `json:"match"`
	// Filter is an optional CEL expression of type bool; the route takes the event only
	// when it is true.
	Filter string `json:"filter,omitempty"`
	// Mapping is an optional CEL expression whose value is the destination's JSON
	// payload; empty means the canonical event as JSON.
	Mapping string `json:"mapping,omitempty"`
	// Destination, or Destinations for several, names Destination documents.
	Destination  string   `json:"destination,omitempty"`
	Destinations []string `json:"destinations,omitempty"`
}

// Match selects events by type and business keys. Empty Types matches every type; every
// entry of Keys must match (a value with * or ? is a glob, otherwise exact).
type Match struct {
	Types []string          `json:"types,omitempty"`
	Keys  map[string]string `json:"keys,omitempty"`
}

// PolicySpec is the spec of a Policy as written. Absent sections take the defaults of
// DefaultPolicy; see EffectivePolicy.
type PolicySpec struct {
	RateLimit      *RateLimitSpec      `json:"rateLimit,omitempty"`
	Coalesce       *CoalesceSpec       `json:"coalesce,omitempty"`
	Batch          *BatchSpec          `json:"batch,omitempty"`
	Retry          *RetrySpec          `json:"retry,omitempty"`
	CircuitBreaker *CircuitBreakerSpec `json:"circuitBreaker,omitempty"`
}

// RateLimitSpec is a token bucket: perSecond requests per second, bursts of burst.
type RateLimitSpec struct {
	PerSecond float64 `json:"perSecond"`
	Burst     int     `json:"burst,omitempty"`
}

// CoalesceSpec keeps only the newest queued event per key. By names the business keys
// that form the coalescing key; empty means all of the event's keys.
type CoalesceSpec struct {
	Enabled bool     `json:"enabled"`
	By      []string `json:"by,omitempty"`
}

// BatchSpec groups up to maxEvents events, waiting at most maxWait for a batch to fill.
type BatchSpec struct {
	MaxEvents int       `json:"maxEvents"`
	MaxWait   *Duration `json:"maxWait,omitempty"`
}

// RetrySpec bounds retries: exponential backoff with jitter from initialBackoff up to
// maxBackoff; after maxAttempts attempts the event is dead-lettered.
type RetrySpec struct {
	MaxAttempts    int       `json:"maxAttempts,omitempty"`
	InitialBackoff *Duration `json:"initialBackoff,omitempty"`
	MaxBackoff     *Duration `json:"maxBackoff,omitempty"`
}

// CircuitBreakerSpec opens the circuit after failureThreshold consecutive failures and
// probes again after cooldown.
type CircuitBreakerSpec struct {
	FailureThreshold int       `json:"failureThreshold,omitempty"`
	Cooldown         *Duration `json:"cooldown,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("1.5s", "2m").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"10s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use e.g. \"500ms\", \"10s\", \"2m\")", s)
	}
	d.Duration = v
	return nil
}

// wire is a document as it is encoded: the spec is decoded by kind.
type wire struct {
	APIVersion string          `json:"apiVersion"`
	Kind       Kind            `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// Canonical is the document's stored form: YAML with sorted keys and no comments, so
// that two files that say the same thing store the same bytes (an unchanged apply).
func (d *Document) Canonical() ([]byte, error) {
	var spec any
	switch d.Kind {
	case KindDestination:
		spec = d.Destination
	case KindRoute:
		spec = d.Route
	case KindPolicy:
		spec = d.Policy
	case KindRetention:
		spec = d.Retention
	case KindPartner:
		spec = d.Partner
	case KindTier:
		spec = d.Tier
	case KindAlert:
		spec = d.Alert
	case KindTradingPartner:
		spec = d.TradingPartner
	case KindAgentConfig:
		spec = d.AgentConfig
	default:
		return nil, fmt.Errorf("routing: unknown kind %q", d.Kind)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("routing: encode %s: %w", d.Ref(), err)
	}
	j, err := json.Marshal(wire{APIVersion: d.APIVersion, Kind: d.Kind, Metadata: d.Metadata, Spec: raw})
	if err != nil {
		return nil, fmt.Errorf("routing: encode %s: %w", d.Ref(), err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("routing: encode %s: %w", d.Ref(), err)
	}
	return y, nil
}

// Masked returns a copy whose webhook secret is replaced by a fingerprint, for display.
func (d *Document) Masked() *Document {
	c := *d
	if d.Destination != nil && d.Destination.Secret != "" {
		ds := *d.Destination
		ds.Secret = MaskSecret(ds.Secret)
		c.Destination = &ds
	}
	return &c
}

// splitDocuments splits a YAML stream at lines that are exactly "---" (with optional
// trailing spaces or a comment). Each part keeps the line number it starts at.
func splitDocuments(b []byte) (parts [][]byte, firstLines []int) {
	lines := bytes.SplitAfter(b, []byte("\n"))
	var cur bytes.Buffer
	start := 1
	for i, ln := range lines {
		t := bytes.TrimRight(ln, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- #")) {
			parts, firstLines = append(parts, bytes.Clone(cur.Bytes())), append(firstLines, start)
			cur.Reset()
			start = i + 2
			continue
		}
		cur.Write(ln)
	}
	parts, firstLines = append(parts, cur.Bytes()), append(firstLines, start)
	return parts, firstLines
}

// blank reports whether a YAML part holds only whitespace and comments.
func blank(b []byte) bool {
	for _, ln := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(ln)
		if len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}
