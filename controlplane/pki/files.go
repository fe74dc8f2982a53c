package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteKeyPair stores a certificate and its private key as dir/name.crt (mode 0644)
// and dir/name.key (0600), creating dir (0700) if needed. It refuses a certificate
// and key that do not belong together. Each file is replaced atomically (temporary
// file, fsync, rename, fsync of dir); the key is written first, so a crash can
// leave a new key beside an old certificate, which LoadKeyPair's callers detect when
// they parse the pair, but never a torn file.
func WriteKeyPair(dir, name string, certPEM, keyPEM []byte) error {
	if err := checkFileName(name); err != nil {
		return fmt.Errorf("pki: write key pair: %w", err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("pki: write key pair %q: %w: %w", name, ErrInvalidKeyPair, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: write key pair: create %s: %w", dir, err)
	}
	if err := writeFileAtomic(dir, name+".key", keyPEM, 0o600); err != nil {
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

// writeFileAtomic replaces dir/name with data: write a temporary file in dir, set
// its mode, fsync it, rename it over name, and fsync dir so the rename is durable.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	dst := filepath.Join(dir, name)
	if err = os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, dst, err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some platforms (e.g. Windows) cannot fsync a directory; the rename stands.
	if err != nil && (errors.Is(err, os.ErrInvalid) || errors.Is(err, errors.ErrUnsupported)) {
		return nil
	}
	return err
}
