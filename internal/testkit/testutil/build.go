package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildPlugin builds the Go package pkg (an import path, or a path relative to the test's
// package such as "./testdata/plugin") into t's temporary directory and returns the
// binary's path and its SHA-256 in hex, as an agent config names an external plugin.
func BuildPlugin(t testing.TB, pkg string) (path, sha256Hex string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), filepath.Base(pkg)+"-plugin")
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build plugin %s: %v\n%s", pkg, err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}
