package console

import (
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	got, err := ParseKeys([]string{"sku=A-100", "order=SO-1,partner=acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["sku"] != "A-100" || got["order"] != "SO-1" || got["partner"] != "acme" {
		t.Fatalf("got %v", got)
	}
	for _, bad := range [][]string{nil, {""}, {"sku"}, {"=x"}, {"sku="}, {"sku=a", "sku=b"}, {"k=" + strings.Repeat("x", MaxKeyLen+1)}} {
		if _, err := ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
}

// FuzzParseKeys: whatever the text, ParseKeys either refuses it or returns keys whose
// names and values are non-empty, bounded and free of separators.
func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{"sku=A-100", "order=SO-1 partner=acme", "a=b,c=d", "x==y", "=", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseKeys([]string{s})
		if err != nil {
			return
		}
		for k, v := range keys {
			if k == "" || v == "" || len(k) > MaxKeyLen || len(v) > MaxKeyLen || strings.ContainsAny(k, " ,=\t\n") || strings.ContainsAny(v, " ,\t\n") {
				t.Fatalf("ParseKeys(%q) = %q=%q", s, k, v)
			}
		}
	})
}
