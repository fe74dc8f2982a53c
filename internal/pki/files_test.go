package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteKeyPair(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "identity")
	if _, _, err := LoadKeyPair(dir, "ca"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKeyPair before write: %v, want ErrNotExist", err)
	}
	if err := WriteKeyPair(dir, "ca", ca.CertPEM(), keyPEM); err != nil {
		t.Fatalf("WriteKeyPair: %v", err)
	}
	for name, want := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	c, k, err := LoadKeyPair(dir, "ca")
	if err != nil || !bytes.Equal(c, ca.CertPEM()) || !bytes.Equal(k, keyPEM) {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if _, err := LoadCA(c, k); err != nil {
		t.Fatal(err)
	}

	// Replace with another pair; no temporary files are left behind.
	other := newTestCA(t, "Other CA")
	otherKey, _ := other.KeyPEM()
	if err := WriteKeyPair(dir, "ca", other.CertPEM(), otherKey); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := LoadKeyPair(dir, "ca"); !bytes.Equal(c, other.CertPEM()) {
		t.Fatal("certificate not replaced")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("dir holds %q, want only ca.crt and ca.key", names)
	}

	// Only the key missing is still "not enrolled".
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadKeyPair(dir, "ca"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKeyPair without key: %v, want ErrNotExist", err)
	}
}

func TestWriteKeyPairRejects(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	otherKey, _ := other.KeyPEM()
	dir := t.TempDir()
	if err := WriteKeyPair(dir, "ca", ca.CertPEM(), otherKey); !errors.Is(err, ErrInvalidKeyPair) {
		t.Fatalf("mismatched pair: %v, want ErrInvalidKeyPair", err)
	}
	if err := WriteKeyPair(dir, "ca", []byte("x"), []byte("y")); !errors.Is(err, ErrInvalidKeyPair) {
		t.Fatalf("garbage pair: %v, want ErrInvalidKeyPair", err)
	}
	key, _ := ca.KeyPEM()
	for _, name := range []string{"", ".", "..", "a/b", `a\b`} {
		if err := WriteKeyPair(dir, name, ca.CertPEM(), key); err == nil {
			t.Errorf("WriteKeyPair accepted name %q", name)
		}
		if _, _, err := LoadKeyPair(dir, name); err == nil {
			t.Errorf("LoadKeyPair accepted name %q", name)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("rejected writes left %d files", len(entries))
	}
}
