// Package pki holds the control plane's public-key infrastructure: the cluster CA,
// node and agent certificates, enrollment and admin tokens, and the TLS configs built
// from them.
//
// # Trust model
//
// The first control-plane node creates the cluster CA at bootstrap (NewCA) and stores
// it in Raft, so every node can load it (LoadCA) and sign. Each node issues itself a
// server certificate (IssueServer: CN=node id, OU=server, usable as server and as
// client because nodes dial each other).
//
// An agent starts with nothing but an enrollment token from `crossdock token create`.
// The token carries a single-use secret and the CA pin: the SHA-256 of the CA
// certificate's SubjectPublicKeyInfo, like kubeadm's discovery hash (see CA.Pin). The
// agent dials a server with PinnedTLSConfig, which accepts the server only if it
// presents a CA matching the pin and a server certificate signed by that CA, and sends
// the token with a CSR (NewKeyAndCSR). The server consumes the token and signs the CSR
// (SignCSR: CN=agent id, OU=agent, client auth only; whatever subject the CSR asks for
// is ignored). From then on the agent speaks mTLS only (ClientTLSConfig), and servers
// learn who is calling from the verified chain (PeerIdentity). The admin CLI verifies
// the server against the CA and authenticates with a bearer admin token.
//
// # Token formats
//
// Enrollment token, four dot-separated parts:
//
//	cdt1.<id>.<secret>.<pin>
//
//	cdt1    format version
//	id      8 random bytes as 16 lowercase hex chars; names the token, not secret
//	secret  32 random bytes, base64url without padding (43 chars); stored hashed (HashSecret)
//	pin     the CA pin's 64 lowercase hex chars, without the "sha256:" prefix
//
// Admin (bearer) token, three dot-separated parts:
//
//	cda1.<id>.<secret>
//
// with id and secret as above. Parsing is strict and canonical: a string that parses
// re-serializes byte for byte (apart from the surrounding whitespace ParseToken and
// ParseAdminToken trim).
//
// All types and functions are safe for concurrent use.
package pki
