package pki

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseToken checks that ParseToken never panics, fails only with
// ErrTokenMalformed, and is canonical: a parsed token serializes back to the
// trimmed input and parses again to the same token. Seeds: testdata/fuzz/FuzzParseToken.
func FuzzParseToken(f *testing.F) {
	f.Add("cdt1." + testID + "." + testSecret + "." + testPinHex)
	f.Add("cda1." + testID + "." + testSecret)
	f.Add("cdt1...")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("ParseToken(%q) error %v does not wrap ErrTokenMalformed", s, err)
			}
			return
		}
		out := tok.String()
		if want := strings.TrimSpace(s); out != want {
			t.Fatalf("ParseToken(%q).String() = %q, want %q", s, out, want)
		}
		again, err := ParseToken(out)
		if err != nil || again != tok {
			t.Fatalf("re-parse of %q = %+v, %v; want %+v", out, again, err, tok)
		}
		if err := checkPin(tok.CAPin); err != nil {
			t.Fatalf("parsed pin %q invalid: %v", tok.CAPin, err)
		}
	})
}

// FuzzParseAdminToken is FuzzParseToken for admin tokens. Seeds:
// testdata/fuzz/FuzzParseAdminToken.
func FuzzParseAdminToken(f *testing.F) {
	f.Add("cda1." + testID + "." + testSecret)
	f.Add("cdt1." + testID + "." + testSecret + "." + testPinHex)
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseAdminToken(s)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("ParseAdminToken(%q) error %v does not wrap ErrTokenMalformed", s, err)
			}
			return
		}
		out := "cda1." + id + "." + secret
		if want := strings.TrimSpace(s); out != want {
			t.Fatalf("ParseAdminToken(%q) re-serializes to %q, want %q", s, out, want)
		}
		id2, secret2, err := ParseAdminToken(out)
		if err != nil || id2 != id || secret2 != secret {
			t.Fatalf("re-parse of %q = %q, %q, %v", out, id2, secret2, err)
		}
	})
}
