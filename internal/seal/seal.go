// Package seal encrypts the secrets the control plane stores (webhook signing secrets,
// the cluster CA key) under a key that is kept outside the data it protects: raft log,
// ledger files and snapshots hold only sealed values, useless without the key file.
//
// A key file holds one key per line, "<id> <base64 of 32 bytes>"; blank lines and lines
// starting with '#' are ignored. The first key seals; every key in the file opens.
// Rotation puts a new key first and keeps the old ones below until nothing sealed under
// them is left (see docs/operations.md, "Secrets at rest").
//
// A sealed value is "sealed:v1:<key id>:<base64url(nonce || AES-256-GCM ciphertext)>".
// Sealing is deterministic: the nonce is an HMAC of the purpose and the plain text
// under the key, so applying the same document twice stores the same bytes (and an
// unchanged document stays unchanged). The only thing that leaks is equality of two
// secrets sealed under one key for one purpose.
package seal

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Prefix starts every sealed value.
const Prefix = "sealed:v1:"

// KeySize is the size of a key in bytes (AES-256).
const KeySize = 32

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// ErrUnknownKey is returned by Open for a value sealed under a key the keyring lacks.
var ErrUnknownKey = errors.New("sealed under a key this keyring does not hold")

type key struct {
	id   string
	aead cipher.AEAD
	mac  []byte // HMAC key for the synthetic nonce, derived from the key
}

// Keyring seals with its first key and opens with any of its keys.
type Keyring struct {
	keys []key
	byID map[string]*key
	text []byte
}

// Parse reads a key file's content.
func Parse(b []byte) (*Keyring, error) {
	kr := &Keyring{byID: map[string]*key{}, text: bytes.Clone(b)}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 2 {
			return nil, fmt.Errorf("seal: line %d: want \"<id> <base64 key>\"", line)
		}
		if !keyIDRE.MatchString(f[0]) {
			return nil, fmt.Errorf("seal: line %d: key id %q: 1-32 characters of A-Z a-z 0-9 _ . -", line, f[0])
		}
		raw, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil || len(raw) != KeySize {
			return nil, fmt.Errorf("seal: line %d: key %s: want base64 of %d bytes", line, f[0], KeySize)
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("seal: line %d: key id %s appears twice", line, f[0])
		}
		seen[f[0]] = true
		k, err := newKey(f[0], raw)
		if err != nil {
			return nil, err
		}
		kr.keys = append(kr.keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("seal: read key file: %w", err)
	}
	if len(kr.keys) == 0 {
		return nil, errors.New("seal: the key file holds no key")
	}
	for i := range kr.keys {
		kr.byID[kr.keys[i].id] = &kr.keys[i]
	}
	return kr, nil
}

func newKey(id string, raw []byte) (key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, fmt.Errorf("seal: key %s: %w", id, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, fmt.Errorf("seal: key %s: %w", id, err)
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("crossdock seal nonce key"))
	return key{id: id, aead: aead, mac: m.Sum(nil)}, nil
}

// Load reads a key file. It refuses a file others can read or write.
func Load(path string) (*Keyring, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("seal: key file %s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: key file: %w", err)
	}
	kr, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return kr, nil
}

// NewKeyLine returns a new random key as a key file line, "<id> <base64>", with an id
// "k" and 8 hex digits.
func NewKeyLine() (string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("seal: new key: %w", err)
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("seal: new key id: %w", err)
	}
	return fmt.Sprintf("k%x %s", id, base64.StdEncoding.EncodeToString(raw)), nil
}

// Create writes a new key file holding one new key, mode 0600; it refuses to replace
// an existing file.
func Create(path string) (*Keyring, error) {
	line, err := NewKeyLine()
	if err != nil {
		return nil, err
	}
	text := "# Crossdock secrets key: keep it outside the data dir, back it up apart from it.\n" + line + "\n"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("seal: create key file: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("seal: write key file: %w", err)
	}
	return Parse([]byte(text))
}

// Text returns the key file's content (to hand a joining node the cluster's keys).
func (k *Keyring) Text() []byte { return bytes.Clone(k.text) }

// ActiveID is the id of the key that seals.
func (k *Keyring) ActiveID() string { return k.keys[0].id }

// IDs lists the key ids, the sealing one first.
func (k *Keyring) IDs() []string {
	out := make([]string, len(k.keys))
	for i, kk := range k.keys {
		out[i] = kk.id
	}
	return out
}

// IsSealed reports whether s is a sealed value.
func IsSealed(s string) bool { return strings.HasPrefix(s, Prefix) }

// KeyID returns the id of the key a sealed value was sealed under.
func KeyID(s string) (string, bool) {
	if !IsSealed(s) {
		return "", false
	}
	rest := s[len(Prefix):]
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// Seal encrypts plain for purpose (e.g. "destination-secret"), which is bound to the
// value: a value sealed for one purpose does not open for another.
func (k *Keyring) Seal(purpose string, plain []byte) string {
	kk := &k.keys[0]
	m := hmac.New(sha256.New, kk.mac)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(plain)
	nonce := m.Sum(nil)[:kk.aead.NonceSize()]
	out := kk.aead.Seal(append([]byte(nil), nonce...), nonce, plain, []byte(purpose))
	return Prefix + kk.id + ":" + base64.RawURLEncoding.EncodeToString(out)
}

// Open decrypts a sealed value for purpose.
func (k *Keyring) Open(purpose, sealed string) ([]byte, error) {
	id, ok := KeyID(sealed)
	if !ok {
		return nil, errors.New("seal: not a sealed value")
	}
	kk := k.byID[id]
	if kk == nil {
		return nil, fmt.Errorf("seal: key %s: %w (it holds %s): add that key to the key file", id, ErrUnknownKey, strings.Join(k.IDs(), ", "))
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sealed[len(Prefix)+len(id)+1:])
	if err != nil || len(raw) < kk.aead.NonceSize()+kk.aead.Overhead() {
		return nil, errors.New("seal: sealed value is damaged")
	}
	n := kk.aead.NonceSize()
	plain, err := kk.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return nil, fmt.Errorf("seal: value sealed under key %s does not open: wrong key with that id, or damaged", id)
	}
	return plain, nil
}

// OpenString opens s when it is sealed and returns it unchanged when it is not (values
// stored before sealing existed, or ${env:...} references).
func (k *Keyring) OpenString(purpose, s string) (string, error) {
	if !IsSealed(s) {
		return s, nil
	}
	if k == nil {
		return "", errors.New("seal: a sealed secret, and no secrets key configured")
	}
	b, err := k.Open(purpose, s)
	return string(b), err
}

// Purposes of the values the control plane seals.
const (
	// PurposeCAKey seals the cluster CA's private key (PEM).
	PurposeCAKey = "ca-key"
	// PurposeDestinationSecret seals a destination's spec.secret.
	PurposeDestinationSecret = "destination-secret"
)
