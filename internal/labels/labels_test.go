package labels

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	m, err := Parse("site=east,erp=tryton", "tier=gold")
	if err != nil {
		t.Fatal(err)
	}
	if got := String(m); got != "erp=tryton,site=east,tier=gold" {
		t.Fatalf("String = %q", got)
	}
	for in, want := range map[string]string{
		"site":           "want key=value",
		"Site=east":      "label key",
		"site=east west": "value",
		"a=1,a=2":        "given twice",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

func TestMatches(t *testing.T) {
	l := map[string]string{"site": "east", "erp": "tryton"}
	if !Matches(map[string]string{"site": "east"}, l) || !Matches(nil, l) {
		t.Fatal("a subset must match")
	}
	if Matches(map[string]string{"site": "west"}, l) || Matches(map[string]string{"zone": ""}, l) {
		t.Fatal("another value or a missing key must not match")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"site=east", "site=east,erp=tryton", "a=", "=b", ",,", "k=v=w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			return
		}
		if err := Check(m); err != nil {
			t.Fatalf("Parse(%q) accepted labels Check refuses: %v", s, err)
		}
		back, err := Parse(String(m))
		if err != nil || String(back) != String(m) {
			t.Fatalf("round trip of %q: %v %q", s, err, String(back))
		}
	})
}
