package pki

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

const (
	testID     = "0123456789abcdef"
	testSecret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE" // 32 bytes, canonical
	testPinHex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func TestTokenRoundTrip(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	tok, err := NewToken(ca.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if !isLowerHex(tok.ID, 16) {
		t.Fatalf("ID %q is not 16 hex chars", tok.ID)
	}
	if b, err := base64.RawURLEncoding.DecodeString(tok.Secret); err != nil || len(b) != 32 {
		t.Fatalf("Secret %q is not 32 bytes of base64url (%v)", tok.Secret, err)
	}
	if tok.CAPin != ca.Pin() {
		t.Fatal("CAPin not kept")
	}
	s := tok.String()
	if want := "cdt1." + tok.ID + "." + tok.Secret + "." + strings.TrimPrefix(ca.Pin(), "sha256:"); s != want {
		t.Fatalf("String = %q, want %q", s, want)
	}
	for _, in := range []string{s, "  " + s + "\n", "\t" + s + "\r\n"} {
		got, err := ParseToken(in)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", in, err)
		}
		if got != tok {
			t.Fatalf("ParseToken = %+v, want %+v", got, tok)
		}
	}
	tok2, err := NewToken(ca.Pin())
	if err != nil {
		t.Fatal(err)
	}
	if tok2.ID == tok.ID || tok2.Secret == tok.Secret {
		t.Fatal("two tokens share an id or secret")
	}
}

func TestNewTokenRejectsBadPin(t *testing.T) {
	for _, pin := range []string{"", testPinHex, "sha256:" + strings.ToUpper(testPinHex), "sha256:abc", "md5:" + testPinHex} {
		if _, err := NewToken(pin); !errors.Is(err, ErrInvalidPin) {
			t.Errorf("NewToken(%q) = %v, want ErrInvalidPin", pin, err)
		}
	}
}

func TestParseTokenMalformed(t *testing.T) {
	valid := "cdt1." + testID + "." + testSecret + "." + testPinHex
	if _, err := ParseToken(valid); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	for _, tc := range []struct {
		name, in, msg string
	}{
		{"empty", "", "empty token"},
		{"blank", " \n\t", "empty token"},
		{"one part", "garbage", "want 4 dot-separated parts"},
		{"three parts", "cdt1." + testID + "." + testSecret, "want 4 dot-separated parts"},
		{"five parts", valid + ".x", "want 4 dot-separated parts"},
		{"trailing dot", valid + ".", "want 4 dot-separated parts"},
		{"unknown version", "cdt2." + testID + "." + testSecret + "." + testPinHex, "unknown version"},
		{"upper version", "CDT1." + testID + "." + testSecret + "." + testPinHex, "unknown version"},
		{"admin token", "cda1." + testID + "." + testSecret, "this is an admin token"},
		{"short id", "cdt1.0123." + testSecret + "." + testPinHex, "id must be 16 hex chars"},
		{"upper id", "cdt1." + strings.ToUpper(testID) + "." + testSecret + "." + testPinHex, "id must be 16 hex chars"},
		{"non-hex id", "cdt1.0123456789abcdeg." + testSecret + "." + testPinHex, "id must be 16 hex chars"},
		{"empty id", "cdt1.." + testSecret + "." + testPinHex, "id must be 16 hex chars"},
		{"short secret", "cdt1." + testID + ".AAAA." + testPinHex, "secret must be 43 base64url chars"},
		{"padded secret", "cdt1." + testID + "." + testSecret + "=." + testPinHex, "secret must be 43 base64url chars"},
		{"std base64 secret", "cdt1." + testID + "." + testSecret[:42] + "+." + testPinHex, "secret must be 43 base64url chars"},
		{"non-canonical secret", "cdt1." + testID + "." + testSecret[:42] + "B." + testPinHex, "secret must be 43 base64url chars"},
		{"newline in secret", "cdt1." + testID + "." + testSecret[:20] + "\n" + testSecret[21:] + "." + testPinHex, "secret must be 43 base64url chars"},
		{"short pin", "cdt1." + testID + "." + testSecret + ".abcd", "CA pin must be 64 hex chars"},
		{"prefixed pin", "cdt1." + testID + "." + testSecret + ".sha256:" + testPinHex, "CA pin must be 64 hex chars"},
		{"upper pin", "cdt1." + testID + "." + testSecret + "." + strings.ToUpper(testPinHex), "CA pin must be 64 hex chars"},
		{"inner space", "cdt1." + testID + " ." + testSecret + "." + testPinHex, "id must be 16 hex chars"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.in)
			wantErrIs(t, err, ErrTokenMalformed)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), testSecret[:20]) {
				t.Fatalf("error %q leaks the secret", err)
			}
		})
	}
}

func TestAdminTokenRoundTrip(t *testing.T) {
	id, secret, full, err := NewAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	if full != "cda1."+id+"."+secret || !isLowerHex(id, 16) || !isSecret(secret) {
		t.Fatalf("NewAdminToken = %q, %q, %q", id, secret, full)
	}
	gotID, gotSecret, err := ParseAdminToken(" " + full + "\n")
	if err != nil || gotID != id || gotSecret != secret {
		t.Fatalf("ParseAdminToken = %q, %q, %v", gotID, gotSecret, err)
	}
	id2, secret2, _, err := NewAdminToken()
	if err != nil || id2 == id || secret2 == secret {
		t.Fatal("two admin tokens share an id or secret")
	}
}

func TestParseAdminTokenMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, in, msg string
	}{
		{"empty", "", "empty token"},
		{"two parts", "cda1." + testID, "want 3 dot-separated parts"},
		{"four parts", "cda1." + testID + "." + testSecret + ".x", "want 3 dot-separated parts"},
		{"unknown version", "cda2." + testID + "." + testSecret, "unknown version"},
		{"enrollment token", "cdt1." + testID + "." + testSecret + "." + testPinHex, "this is an enrollment token"},
		{"bad id", "cda1.xyz." + testSecret, "id must be 16 hex chars"},
		{"bad secret", "cda1." + testID + ".not-a-secret", "secret must be 43 base64url chars"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseAdminToken(tc.in)
			wantErrIs(t, err, ErrTokenMalformed)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	a, b := HashSecret("one"), HashSecret("two")
	if len(a) != 32 {
		t.Fatalf("hash length %d", len(a))
	}
	if !EqualHash(a, HashSecret("one")) {
		t.Fatal("equal hashes differ")
	}
	if EqualHash(a, b) || EqualHash(a, a[:16]) {
		t.Fatal("different hashes equal")
	}
	if EqualHash(nil, nil) || EqualHash(nil, a) || EqualHash([]byte{}, []byte{}) {
		t.Fatal("empty hash matched")
	}
}
