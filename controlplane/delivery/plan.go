package delivery

import (
	"time"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Destination kinds.
const (
	KindWebhook = "webhook"
	KindStream  = "stream"
	KindAgent   = "agent"
)

// Plan is what the engine delivers: the destinations and the routes that feed them. It
// is built from the routing documents in raft (see RoutingPlans); tests build it directly.
type Plan struct {
	// Version changes whenever anything in the plan changes; the engine restarts its
	// workers (gracefully, from the committed cursors) when it does.
	Version      string
	Destinations []Destination
	Routes       []Route
}

// Destination is one receiver and the policy it is sent under.
type Destination struct {
	Name string
	// Kind is webhook, stream or agent.
	Kind string
	// Webhook: endpoint, Standard Webhooks secret ("whsec_" + base64), extra headers,
	// request timeout (default 10s), and whether it takes a JSON array of messages.
	URL            string
	Secret         string
	Headers        map[string]string
	Timeout        time.Duration
	AcceptsBatches bool
	// Agent sink: the connector on the agent that receives the events.
	Agent     string
	Connector string
	Policy    Policy
	// Err, when set, says why the destination cannot be delivered to (shown in status).
	Err string
	// Fingerprint identifies the destination's spec, policy and routes: when a plan
	// changes, only destinations whose fingerprint changed are restarted. Empty: every
	// plan change restarts the destination.
	Fingerprint string
}

// Policy is how a destination is sent to. Zero fields take the defaults of
// DefaultPolicy.
type Policy struct {
	// RatePerSecond requests per second with bursts of Burst (token bucket); 0 means
	// no limit.
	RatePerSecond float64
	Burst         int
	// Coalesce keeps only the newest queued message per key; CoalesceBy names the
	// business keys forming that key (all the event's keys when empty).
	Coalesce   bool
	CoalesceBy []string
	// BatchMax messages per request (destinations that accept batches), waiting at most
	// BatchWait for a batch to fill.
	BatchMax  int
	BatchWait time.Duration
	// MaxAttempts before a message is dead-lettered; backoff doubles from
	// InitialBackoff up to MaxBackoff, with jitter.
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// The circuit opens after BreakerThreshold consecutive failures and lets one probe
	// through after BreakerCooldown.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// Concurrency is how many requests may be in flight (different keys). Window bounds
	// the messages queued, in flight, or finished above the committed cursor: what a new
	// leader may send again after a failover. Neither is part of the routing documents.
	Concurrency int
	Window      int
}

// DefaultPolicy is used for every field a destination's policy leaves at zero.
var DefaultPolicy = Policy{
	BatchMax:         100,
	BatchWait:        20 * time.Millisecond,
	MaxAttempts:      10,
	InitialBackoff:   200 * time.Millisecond,
	MaxBackoff:       30 * time.Second,
	BreakerThreshold: 10,
	BreakerCooldown:  10 * time.Second,
	Concurrency:      8,
	Window:           10000,
}

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy
	if p.BatchMax <= 0 {
		p.BatchMax = d.BatchMax
	}
	if p.BatchWait <= 0 {
		p.BatchWait = d.BatchWait
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
	if p.BreakerThreshold <= 0 {
		p.BreakerThreshold = d.BreakerThreshold
	}
	if p.BreakerCooldown <= 0 {
		p.BreakerCooldown = d.BreakerCooldown
	}
	if p.Concurrency <= 0 {
		p.Concurrency = d.Concurrency
	}
	if p.Window <= 0 {
		p.Window = d.Window
	}
	if p.RatePerSecond > 0 && p.Burst <= 0 {
		p.Burst = 1
	}
	return p
}

// Route feeds destinations: Evaluate says whether it takes a committed event and what
// payload (JSON) it maps it to. An error is a mapping error (the message is
// dead-lettered with it).
type Route struct {
	Name         string
	Destinations []string
	Evaluate     func(ce *eventv1.CommittedEvent) (matched bool, payload []byte, err error)
}

// PlanSource gives the engine the current plan.
type PlanSource interface {
	Plan() (*Plan, error)
}

// StaticPlan is a PlanSource that never changes.
type StaticPlan struct{ P *Plan }

// Plan returns the plan.
func (s StaticPlan) Plan() (*Plan, error) { return s.P, nil }

// destination returns the named destination of p.
func (p *Plan) destination(name string) (Destination, bool) {
	for _, d := range p.Destinations {
		if d.Name == name {
			return d, true
		}
	}
	return Destination{}, false
}

// routesTo returns the routes feeding dest, in plan order.
func (p *Plan) routesTo(dest string) []Route {
	var out []Route
	for _, r := range p.Routes {
		for _, d := range r.Destinations {
			if d == dest {
				out = append(out, r)
				break
			}
		}
	}
	return out
}
