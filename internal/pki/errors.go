package pki

import "errors"

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrTokenMalformed means an enrollment or admin token string does not follow
	// its format. The wrapping error says which part is wrong, never the secret.
	ErrTokenMalformed = errors.New("malformed token")

	// ErrPinMismatch means the server did not present a CA certificate whose pin
	// equals the pin the client expects (the one in the enrollment token).
	ErrPinMismatch = errors.New("CA pin mismatch")

	// ErrUntrustedServer means the server presented the pinned CA, but its own
	// certificate does not verify against that CA as a server certificate.
	ErrUntrustedServer = errors.New("server certificate not trusted")

	// ErrInvalidPin means a string is not a CA pin ("sha256:" + 64 lowercase hex).
	ErrInvalidPin = errors.New("invalid CA pin")

	// ErrNoPeerCert means the TLS peer presented no certificate.
	ErrNoPeerCert = errors.New("no client certificate")

	// ErrUnverifiedPeer means the peer sent certificates but none was verified
	// (the tls.Config did not ask for verification against the cluster CA).
	ErrUnverifiedPeer = errors.New("client certificate not verified")

	// ErrBadIdentity means a verified certificate does not carry a crossdock
	// identity (a CN and exactly one OU naming a known Role).
	ErrBadIdentity = errors.New("certificate carries no crossdock identity")

	// ErrInvalidRole means a Role other than RoleAgent, RoleServer or RoleAdmin.
	ErrInvalidRole = errors.New("invalid role")

	// ErrInvalidPEM means the input holds no PEM block of the expected type.
	ErrInvalidPEM = errors.New("invalid PEM")

	// ErrInvalidCSR means a certificate signing request cannot be parsed, its
	// signature does not verify, or its key is not acceptable.
	ErrInvalidCSR = errors.New("invalid certificate signing request")

	// ErrInvalidCA means a certificate and key do not form a usable CA (not a CA
	// certificate, or the key does not match the certificate).
	ErrInvalidCA = errors.New("invalid CA")

	// ErrInvalidKeyPair means a certificate and private key do not match or cannot
	// be parsed.
	ErrInvalidKeyPair = errors.New("invalid key pair")
)
