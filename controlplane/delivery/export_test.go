package delivery

import "net"

// UseResolver makes e's webhooks resolve host names with r (tests: a fake DNS server
// that answers an internal address, as DNS rebinding does). Call it before Run.
func UseResolver(e *Engine, r *net.Resolver) {
	e.client.http = newHTTPClient(e.cfg.AddressPolicy, r)
}
