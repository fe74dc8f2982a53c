package delivery

import "net"

// UseResolver makes e's webhooks resolve host names with r (tests: a fake DNS server
// that answers an internal address, as DNS rebinding does). Call it before Run.
func UseResolver(e *Engine, r *net.Resolver) {
	e.client.http = newHTTPClient(e.cfg.AddressPolicy, r)
}

// ActivePlanVersion is the version of the plan e's workers run ("" before the first):
// a test that changes the plan waits for it before it acts on the new one.
func ActivePlanVersion(e *Engine) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.plan == nil {
		return ""
	}
	return e.plan.Version
}
