// Package api implements the control plane's Connect services: the agents' uplink
// (enrollment and the event stream) and the operators' admin API.
package api

import (
	"context"
	"crypto/tls"
	"net/http"
)

type peerKey struct{}

// Peer is what the transport knows about the caller.
type Peer struct {
	TLS        *tls.ConnectionState
	Transport  string // "h3", "h2" or "http/1.1"
	RemoteAddr string
}

// WithPeer records the caller's TLS state and transport in the request context, where
// Connect handlers (which do not see the *http.Request) can read it.
func WithPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := Peer{TLS: r.TLS, RemoteAddr: r.RemoteAddr}
		switch r.ProtoMajor {
		case 3:
			p.Transport = "h3"
		case 2:
			p.Transport = "h2"
		default:
			p.Transport = "http/1.1"
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
	})
}

// PeerFrom returns the caller recorded by WithPeer.
func PeerFrom(ctx context.Context) Peer {
	p, _ := ctx.Value(peerKey{}).(Peer)
	return p
}
