package pki

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// WriteKeyPair stores a certificate and its private key as dir/name.crt (mode 0644)
// and dir/name.key (0600), creating dir (0700) if needed. It refuses a certificate
// and key that do not belong together. Each file is replaced atomically (temporary
// file, fsync, rename, fsync of dir); the key is written first, so a crash can
// leave a new key beside an old certificate, which LoadKeyPair's callers detect when
// they parse the pair, but never a torn file.
func WriteKeyPair(dir, name string, certPEM, keyPEM []byte) error {
	return WriteKeyPairAs(dir, name, certPEM, keyPEM, keyPEM)
}

// WriteKeyPairAs is WriteKeyPair storing storedKey (e.g. the key sealed: internal/seal)
// in the key file after checking that certPEM and keyPEM belong together.
func WriteKeyPairAs(dir, name string, certPEM, keyPEM, storedKey []byte) error {
	if err := checkFileName(name); err != nil {
		return fmt.Errorf("pki: write key pair: %w", err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("pki: write key pair %q: %w: %w", name, ErrInvalidKeyPair, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: write key pair: create %s: %w", dir, err)
	}
	if err := writeFileAtomic(dir, name+".key", storedKey, 0o600); err != nil {
		return fmt.Errorf("pki: write key pair: %w", err)
	}
	if err := writeFileAtomic(dir, name+".crt", certPEM, 0o644); err != nil {
		return fmt.Errorf("pki: write key pair: %w", err)
	}
	return nil
}

// LoadKeyPair reads dir/name.crt and dir/name.key as written by WriteKeyPair. When
// either is missing the error wraps os.ErrNotExist.
func LoadKeyPair(dir, name string) (certPEM, keyPEM []byte, err error) {
	if err := checkFileName(name); err != nil {
		return nil, nil, fmt.Errorf("pki: load key pair: %w", err)
	}
	certPEM, err = os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: load key pair: %w", err)
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: load key pair: %w", err)
	}
	return certPEM, keyPEM, nil
}

func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || strings.ContainsRune(name, 0) {
		return fmt.Errorf("invalid key pair name %q: want a plain file name without extension", name)
	}
	return nil
}

func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	return fsutil.WriteFileAtomic(dir, name, data, perm)
}
