package delivery

import (
	"time"

	"github.com/crossdock/crossdock/controlplane/routing"
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
	// Policy is how the destination is sent to (rate, coalescing, batching, retries,
	// circuit breaker): routing's one policy model. Zero fields take the defaults of
	// routing.DefaultPolicy.
	Policy routing.Policy
	// Concurrency is how many requests may be in flight (different keys). Window bounds
	// the messages queued, in flight, or finished above the committed cursor: what a new
	// leader may send again after a failover. Neither is part of the routing documents;
	// zero means DefaultConcurrency and DefaultWindow.
	Concurrency int
	Window      int
	// Err, when set, says why the destination cannot be delivered to (shown in status).
	Err string
	// Fingerprint identifies the destination's spec, policy and routes: when a plan
	// changes, only destinations whose fingerprint changed are restarted. Empty: every
	// plan change restarts the destination.
	Fingerprint string
}

// Engine limits a destination gets when its Concurrency or Window is zero.
const (
	DefaultConcurrency = 8
	DefaultWindow      = 10000
)

// sendPolicy is what a worker sends under: the destination's routing policy with the
// defaults filled in, and the engine's limits.
type sendPolicy struct {
	routing.Policy
	Concurrency int
	Window      int
}

func policyOf(d Destination) sendPolicy {
	p := sendPolicy{Policy: d.Policy.WithDefaults(), Concurrency: d.Concurrency, Window: d.Window}
	if p.Concurrency <= 0 {
		p.Concurrency = DefaultConcurrency
	}
	if p.Window <= 0 {
		p.Window = DefaultWindow
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
	// Selects, when set, is Evaluate without the mapping: whether the route takes the
	// event (the timeline).
	Selects func(ce *eventv1.CommittedEvent) (bool, error)
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
