package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFetchRefusesMismatch: a download whose SHA-256 or size is not the
// release's is refused, and nothing is left where the upgrade would take it from.
func TestFetchRefusesMismatch(t *testing.T) {
	data := []byte("a crossdock build")
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	other := sha256.Sum256([]byte("another build"))
	for _, tc := range []struct {
		name, sum string
		size      int64
		body      []byte
		want      string
	}{
		{"checksum", hex.EncodeToString(other[:]), int64(len(data)), data, "checksum mismatch"},
		{"tampered", good, int64(len(data)), []byte("a crossdock bu1ld"), "checksum mismatch"},
		{"short", good, int64(len(data)) + 1, data, "it has 17 bytes, the release 18"},
		{"long", good, int64(len(data)) - 1, data, "larger than the release"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Fetch(dir, tc.sum, tc.size, 0o700, func(w io.Writer) error { _, err := w.Write(tc.body); return err })
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Fetch = %v; want %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("refused download left %v behind", ents)
			}
		})
	}
	dir := t.TempDir()
	path, err := Fetch(dir, good, int64(len(data)), 0o700, func(w io.Writer) error { _, err := w.Write(data); return err })
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); path != filepath.Join(dir, good) || !bytes.Equal(b, data) {
		t.Errorf("Fetch put %q at %s", b, path)
	}
}
