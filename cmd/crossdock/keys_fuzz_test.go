package main

import (
	"maps"
	"strings"
	"testing"
)

// FuzzParseKeys checks parseKeys (the --key name=value flags) against a reference: it
// fails exactly when some flag lacks "=" or has an empty name or value, and otherwise
// maps each name to the value of its last flag, cut at the first "=".
func FuzzParseKeys(f *testing.F) {
	f.Add("sku=A-100\x00location=WH1")
	f.Add("sku=a=b")
	f.Add("sku=A\x00sku=B")
	f.Add("=x")
	f.Add("sku=")
	f.Add("sku")
	f.Add("")
	f.Fuzz(func(t *testing.T, joined string) {
		var kvs []string
		if joined != "" {
			kvs = strings.Split(joined, "\x00")
		}
		got, err := parseKeys(kvs)
		want := map[string]string{}
		valid := true
		for _, kv := range kvs {
			i := strings.IndexByte(kv, '=')
			if i <= 0 || i == len(kv)-1 {
				valid = false
				break
			}
			want[kv[:i]] = kv[i+1:]
		}
		if (err == nil) != valid {
			t.Fatalf("parseKeys(%q) = %v, %v; want valid=%v", kvs, got, err, valid)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "name=value") {
				t.Fatalf("error %q does not say the form wanted", err)
			}
			return
		}
		if !maps.Equal(got, want) {
			t.Fatalf("parseKeys(%q) = %v, want %v", kvs, got, want)
		}
	})
}
