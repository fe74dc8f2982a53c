package seal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKeyring(t *testing.T, lines ...string) *Keyring {
	t.Helper()
	kr, err := Parse([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func newLine(t *testing.T) string {
	t.Helper()
	l, err := NewKeyLine()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSealOpenDeterministic(t *testing.T) {
	kr := mustKeyring(t, newLine(t))
	secret := "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OQ=="
	a := kr.Seal("destination-secret", []byte(secret))
	if !IsSealed(a) || strings.Contains(a, secret) || strings.Contains(a, "c2VjcmV0") {
		t.Fatalf("sealed value %q shows the secret or lacks the prefix", a)
	}
	if b := kr.Seal("destination-secret", []byte(secret)); b != a {
		t.Fatalf("sealing twice gave %q and %q: an unchanged document would look changed", a, b)
	}
	if c := kr.Seal("destination-secret", []byte(secret+"x")); c == a {
		t.Fatal("two secrets sealed to the same value")
	}
	got, err := kr.Open("destination-secret", a)
	if err != nil || string(got) != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := kr.Open("ca-key", a); err == nil {
		t.Fatal("a value sealed for one purpose opened for another")
	}
}

func TestRotationOldKeyOpensNewKeySeals(t *testing.T) {
	old, nw := newLine(t), newLine(t)
	before := mustKeyring(t, old)
	sealedOld := before.Seal("p", []byte("v"))
	after := mustKeyring(t, "# rotated", nw, old)
	if id, _ := KeyID(after.Seal("p", []byte("v"))); id != strings.Fields(nw)[0] {
		t.Fatalf("sealed under %s, want the first key %s", id, strings.Fields(nw)[0])
	}
	if got, err := after.Open("p", sealedOld); err != nil || string(got) != "v" {
		t.Fatalf("old value under the rotated ring: %q, %v", got, err)
	}
	onlyNew := mustKeyring(t, nw)
	_, err := onlyNew.Open("p", sealedOld)
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), strings.Fields(old)[0]) {
		t.Fatalf("open without the old key: %v, want ErrUnknownKey naming the key", err)
	}
}

func TestOpenRefusesDamagedAndForeign(t *testing.T) {
	l := newLine(t)
	kr := mustKeyring(t, l)
	s := kr.Seal("p", []byte("secret value"))
	flipped := []byte(s)
	flipped[len(flipped)-3] ^= 1
	if _, err := kr.Open("p", string(flipped)); err == nil {
		t.Fatal("a damaged value opened")
	}
	// Another key under the same id: refused, not garbage.
	other := mustKeyring(t, strings.Fields(l)[0]+" "+strings.Fields(newLine(t))[1])
	if _, err := other.Open("p", s); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("wrong key with the same id: %v", err)
	}
	if _, err := kr.Open("p", "whsec_plain"); err == nil {
		t.Fatal("a plain value opened")
	}
	if got, err := kr.OpenString("p", "whsec_plain"); err != nil || got != "whsec_plain" {
		t.Fatalf("OpenString of a plain value = %q, %v", got, err)
	}
	var none *Keyring
	if _, err := none.OpenString("p", s); err == nil {
		t.Fatal("a sealed value opened without a keyring")
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no key"},
		{"# only a comment\n", "no key"},
		{"k1", "want"},
		{"k1 notbase64!", "base64"},
		{"k1 c2hvcnQ=", "32 bytes"},
		{"bad/id " + strings.Repeat("A", 43) + "=", "key id"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	l := newLine(t)
	if _, err := Parse([]byte(l + "\n" + l)); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate id: %v", err)
	}
}

func TestCreateAndLoadPermissions(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secrets.key")
	kr, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if _, err := Create(p); err == nil {
		t.Fatal("Create replaced an existing key file")
	}
	loaded, err := Load(p)
	if err != nil || loaded.ActiveID() != kr.ActiveID() {
		t.Fatalf("Load = %v, %v", loaded, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a world-readable key file: %v", err)
	}
}
