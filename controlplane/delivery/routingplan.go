package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/seal"
)

// RoutingPlans builds plans from the routing documents stored in raft, rebuilding only
// when their revision moves.
type RoutingPlans struct {
	Source routing.DocumentSource
	// Keys opens sealed destination secrets (internal/seal); nil when none are sealed.
	Keys *seal.Keyring

	mu   sync.Mutex
	rev  uint64
	plan *Plan
	err  error
}

// Plan returns the plan of the stored documents.
func (p *RoutingPlans) Plan() (*Plan, error) {
	rev, err := p.Source.DocumentsRevision()
	if err != nil {
		return nil, fmt.Errorf("delivery: routing documents revision: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plan != nil && rev == p.rev {
		return p.plan, p.err
	}
	t, err := routing.Load(p.Source)
	if err != nil {
		return nil, err
	}
	p.rev, p.plan, p.err = rev, PlanFromTableKeys(t, p.Keys), nil
	p.plan.Version = fmt.Sprint(rev)
	return p.plan, nil
}

// PlanFromTable converts a routing table whose secrets are not sealed into a plan.
func PlanFromTable(t *routing.Table) *Plan { return PlanFromTableKeys(t, nil) }

// PlanFromTableKeys converts a routing table into a plan, opening sealed destination
// secrets with keys. A secret that does not open makes its destination fail (Err), not
// the plan.
func PlanFromTableKeys(t *routing.Table, keys *seal.Keyring) *Plan {
	plan := &Plan{}
	for _, d := range t.Destinations() {
		dest := Destination{
			Name: d.Name, Kind: d.Spec.Type, URL: d.Spec.URL, Secret: d.Spec.Secret, Headers: d.Spec.Headers,
			Timeout: d.Timeout, AcceptsBatches: d.Spec.AcceptsBatches && d.Policy.BatchMaxEvents > 1,
			Agent: d.Spec.Agent, Connector: d.Spec.Connector, Policy: d.Policy,
		}
		secret, err := keys.OpenString(seal.PurposeDestinationSecret, dest.Secret)
		if err != nil {
			dest.Secret, dest.Err = "", fmt.Sprintf("destinations/%s: spec.secret: %v", d.Name, err)
		} else {
			dest.Secret = secret
		}
		if dest.Kind == KindWebhook && dest.Err == "" {
			if _, err := ParseSecret(dest.Secret); err != nil {
				dest.Err = fmt.Sprintf("destinations/%s: spec.secret: %v", d.Name, err)
			}
		}
		dest.Fingerprint = fingerprint(t, d)
		plan.Destinations = append(plan.Destinations, dest)
	}
	for _, r := range t.Routes() {
		plan.Routes = append(plan.Routes, Route{Name: r.Name, Destinations: r.Destinations, Evaluate: r.Evaluate, Selects: r.Selects})
	}
	return plan
}

// fingerprint hashes what a destination's worker depends on: its spec, effective policy
// and timeout, and the routes feeding it (JSON: deterministic, maps sorted).
func fingerprint(t *routing.Table, d *routing.Destination) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	_ = enc.Encode(d.Spec) // plain data: encoding cannot fail
	_ = enc.Encode(d.Policy)
	_ = enc.Encode(d.Timeout)
	for _, r := range t.RoutesFor(d.Name) {
		_ = enc.Encode(r.Name)
		_ = enc.Encode(r.Spec)
	}
	return hex.EncodeToString(h.Sum(nil))
}
