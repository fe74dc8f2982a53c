package routing

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary YAML streams to Parse: it must return documents or a
// *ValidationError, never panic, and every document it accepts must survive the round
// trip through its canonical form (what the control plane stores).
func FuzzParse(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParse.
	f.Add([]byte("apiVersion: crossdock.io/v1\nkind: Route\nmetadata: {name: r}\nspec: {destination: d}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		docs, err := Parse(b)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errors) == 0 {
				t.Fatalf("error %v is not a non-empty *ValidationError", err)
			}
			return
		}
		for _, d := range docs {
			c, err := d.Canonical()
			if err != nil {
				t.Fatalf("Canonical: %v", err)
			}
			back, err := ParseOne(c)
			if err != nil {
				t.Fatalf("canonical form of %s does not parse: %v\n%s", d.Ref(), err, c)
			}
			c2, err := back.Canonical()
			if err != nil || !bytes.Equal(c, c2) {
				t.Fatalf("canonical form of %s is not a fixed point:\n%s\n---\n%s", d.Ref(), c, c2)
			}
			if d.Kind == KindRoute {
				if _, err := NewRoute(d, 0); err != nil {
					t.Fatalf("accepted route does not compile: %v", err)
				}
			}
		}
	})
}
