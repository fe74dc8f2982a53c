// Package release fetches agent binaries (releases, `crossdock releases push`) and
// checks them on the way: used by agents downloading an upgrade and by control plane
// nodes copying a release from the node it was pushed to.
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrMismatch is a fetched binary whose size or SHA-256 is not the release's.
var ErrMismatch = errors.New("release: the download is not the release")

// ValidSHA256 reports whether s is a SHA-256 in lowercase hex, the form releases are
// named by.
func ValidSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == s
}

// Fetch writes a binary through download into dir/<sum>, checking on the way that it
// has size bytes and SHA-256 sum; only then is it put at its name, with mode perm.
// Anything else leaves nothing behind.
func Fetch(dir, sum string, size int64, perm os.FileMode, download func(io.Writer) error) (string, error) {
	if !ValidSHA256(sum) {
		return "", fmt.Errorf("release: sha256 %q is not 64 lowercase hex digits", sum)
	}
	_, path, err := store(dir, sum, size, perm, download)
	return path, err
}

// Receive writes a binary of size bytes through fill into dir, named by the SHA-256 it
// computes on the way (a push: nobody names the sum before). It returns the sum and the
// path. A binary of another size (ErrMismatch) or a failed fill leaves nothing behind.
func Receive(dir string, size int64, perm os.FileMode, fill func(io.Writer) error) (sum, path string, err error) {
	return store(dir, "", size, perm, fill)
}

// store is Fetch and Receive: want, when not empty, is the SHA-256 the binary must have.
func store(dir, want string, size int64, perm os.FileMode, fill func(io.Writer) error) (string, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("release: create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return "", "", fmt.Errorf("release: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	defer f.Close()
	h := sha256.New()
	lw := &limitWriter{w: io.MultiWriter(f, h), left: size}
	if err := fill(lw); err != nil {
		return "", "", err
	}
	if lw.over || lw.left != 0 {
		return "", "", fmt.Errorf("%w: it has %d bytes, the release %d: refused", ErrMismatch, size-lw.left, size)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return "", "", fmt.Errorf("%w: checksum mismatch: it has sha256 %s, the release %s: refused", ErrMismatch, got, want)
	}
	if err := f.Sync(); err != nil {
		return "", "", fmt.Errorf("release: %w", err)
	}
	if err := f.Chmod(perm); err != nil {
		return "", "", fmt.Errorf("release: %w", err)
	}
	path := filepath.Join(dir, got)
	if err := os.Rename(f.Name(), path); err != nil {
		return "", "", fmt.Errorf("release: %w", err)
	}
	return got, path, nil
}

// limitWriter refuses bytes beyond left.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, fmt.Errorf("%w: it is larger than the release", ErrMismatch)
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}
