// Package partner is the partner front door: API keys, the gate that checks them before
// a body is read, per-node rate limits, the cluster-wide daily quota leased in blocks
// through raft, usage counters and the audit trail of refusals, and the partner API
// (crossdock.partner.v1) served from the live views.
package partner

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyPrefix starts every partner API key: cdk_<id>_<secret>.
const KeyPrefix = "cdk_"

const (
	keyIDBytes     = 8  // 16 hex digits
	keySecretBytes = 32 // 43 base64url characters
)

// ErrKeyFormat is a key that is not cdk_<16 hex digits>_<43 base64url characters>.
var ErrKeyFormat = errors.New("not a Crossdock partner key (want cdk_<id>_<secret>)")

// NewKey returns a fresh key: its id, the SHA-256 of its secret, and the whole key to
// hand to the partner once.
func NewKey() (id string, secretHash []byte, full string, err error) {
	b := make([]byte, keyIDBytes+keySecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, "", fmt.Errorf("partner: random key: %w", err)
	}
	id = hex.EncodeToString(b[:keyIDBytes])
	secret := base64.RawURLEncoding.EncodeToString(b[keyIDBytes:])
	return id, HashSecret(secret), KeyPrefix + id + "_" + secret, nil
}

// ParseKey splits a key into its id and secret.
func ParseKey(s string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(s, KeyPrefix)
	if !ok {
		return "", "", ErrKeyFormat
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 2*keyIDBytes || len(secret) != base64.RawURLEncoding.EncodedLen(keySecretBytes) {
		return "", "", ErrKeyFormat
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return "", "", ErrKeyFormat
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(secret); err != nil {
		return "", "", ErrKeyFormat
	}
	return id, secret, nil
}

// HashSecret is what the control plane stores of a key's secret. The secret is 256
// random bits, so a plain SHA-256 cannot be brute-forced (no slow hash needed).
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SecretMatches compares a presented secret with a stored hash in constant time.
func SecretMatches(stored []byte, secret string) bool {
	return len(stored) == sha256.Size && subtle.ConstantTimeCompare(stored, HashSecret(secret)) == 1
}

// KeyIDPrefix is how a key is shown without its secret: cdk_<id>_…
func KeyIDPrefix(id string) string { return KeyPrefix + id + "_…" }
