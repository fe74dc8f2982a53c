package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

const (
	tokenVersion      = "cdt1"
	adminTokenVersion = "cda1"

	idBytes     = 8
	idLen       = 2 * idBytes // hex
	secretBytes = 32
	secretLen   = 43 // base64url, no padding, of 32 bytes
	pinHexLen   = 2 * sha256.Size
)

// Token is a single-use enrollment token. ID names it (it is logged and stored in
// the clear), Secret proves possession (only its hash is stored, see HashSecret),
// and CAPin ("sha256:<hex>") pins the cluster CA for the agent's first connection.
type Token struct {
	ID     string
	Secret string
	CAPin  string
}

// NewToken makes a token with a random ID and Secret that pins caPin (as returned
// by CA.Pin).
func NewToken(caPin string) (Token, error) {
	if err := checkPin(caPin); err != nil {
		return Token{}, fmt.Errorf("pki: new token: %w", err)
	}
	id, secret, err := newIDAndSecret()
	if err != nil {
		return Token{}, fmt.Errorf("pki: new token: %w", err)
	}
	return Token{ID: id, Secret: secret, CAPin: caPin}, nil
}

// String returns the token in its wire form "cdt1.<id>.<secret>.<pin hex>" (see the
// package documentation). It contains the secret: do not log it.
func (t Token) String() string {
	return tokenVersion + "." + t.ID + "." + t.Secret + "." + strings.TrimPrefix(t.CAPin, pinPrefix)
}

// ParseToken parses the wire form of an enrollment token, after trimming
// surrounding whitespace. It is strict: every part must be in canonical form, so a
// parsed token's String equals the trimmed input. Errors wrap ErrTokenMalformed and
// never quote the secret.
func ParseToken(s string) (Token, error) {
	parts, err := splitToken(s, tokenVersion, 4, "cdt1.ID.SECRET.PIN")
	if err != nil {
		return Token{}, err
	}
	if err := checkIDAndSecret(parts[1], parts[2]); err != nil {
		return Token{}, err
	}
	if !isLowerHex(parts[3], pinHexLen) {
		return Token{}, malformed("CA pin must be %d hex chars (lowercase sha256, without the \"sha256:\" prefix)", pinHexLen)
	}
	return Token{ID: parts[1], Secret: parts[2], CAPin: pinPrefix + parts[3]}, nil
}

// NewAdminToken makes a bearer token for the admin CLI. full is the wire form
// "cda1.<id>.<secret>" to hand to the operator; store only id and HashSecret(secret).
func NewAdminToken() (id, secret string, full string, err error) {
	id, secret, err = newIDAndSecret()
	if err != nil {
		return "", "", "", fmt.Errorf("pki: new admin token: %w", err)
	}
	return id, secret, adminTokenVersion + "." + id + "." + secret, nil
}

// ParseAdminToken parses the wire form of an admin token, after trimming
// surrounding whitespace, as strictly as ParseToken. Errors wrap ErrTokenMalformed.
func ParseAdminToken(s string) (id, secret string, err error) {
	parts, err := splitToken(s, adminTokenVersion, 3, "cda1.ID.SECRET")
	if err != nil {
		return "", "", err
	}
	if err := checkIDAndSecret(parts[1], parts[2]); err != nil {
		return "", "", err
	}
	return parts[1], parts[2], nil
}

// HashSecret returns the SHA-256 of a token secret, the form in which secrets are
// stored. Secrets are 256 random bits, so a plain hash is enough (no salt, no KDF).
func HashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// EqualHash compares two secret hashes in constant time. Empty hashes never match,
// so a missing stored hash cannot equal a missing presented one.
func EqualHash(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	return subtle.ConstantTimeCompare(a, b) == 1
}

func newIDAndSecret() (id, secret string, err error) {
	var b [idBytes + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b[:idBytes]), base64.RawURLEncoding.EncodeToString(b[idBytes:]), nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("pki: %w: "+format, append([]any{ErrTokenMalformed}, args...)...)
}

// splitToken trims s, checks the part count and version, and returns the parts.
func splitToken(s, version string, n int, shape string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, malformed("empty token")
	}
	parts := strings.Split(s, ".")
	if parts[0] != version {
		switch parts[0] {
		case tokenVersion:
			return nil, malformed("this is an enrollment token (cdt1), not an admin token")
		case adminTokenVersion:
			return nil, malformed("this is an admin token (cda1), not an enrollment token")
		}
		if len(parts) == n {
			return nil, malformed("unknown version, want %s", version)
		}
	}
	if len(parts) != n {
		return nil, malformed("want %d dot-separated parts (%s), got %d", n, shape, len(parts))
	}
	return parts, nil
}

func checkIDAndSecret(id, secret string) error {
	if !isLowerHex(id, idLen) {
		return malformed("id must be %d hex chars (lowercase)", idLen)
	}
	if !isSecret(secret) {
		return malformed("secret must be %d base64url chars without padding (%d bytes)", secretLen, secretBytes)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isSecret reports whether s is the canonical unpadded base64url encoding of
// secretBytes bytes. The alphabet is checked by hand because the decoder skips
// CR and LF, and Strict rejects non-zero trailing bits (non-canonical encodings).
func isSecret(s string) bool {
	if len(s) != secretLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == secretBytes
}

// checkPin validates a CA pin: "sha256:" and 64 lowercase hex chars.
func checkPin(pin string) error {
	h, ok := strings.CutPrefix(pin, pinPrefix)
	if !ok || !isLowerHex(h, pinHexLen) {
		return fmt.Errorf("%w: want \"sha256:\" and %d lowercase hex chars", ErrInvalidPin, pinHexLen)
	}
	return nil
}
