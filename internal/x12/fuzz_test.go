package x12

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// FuzzRead feeds arbitrary bytes to the reader. It must not panic; every error must be
// typed; every accepted set must survive a write and a read unchanged; and the
// acknowledgement of whatever was read must be writable.
func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.x12")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(envelope(goodSet, "9", "1", "9", "1", "000000009")))
	f.Fuzz(func(t *testing.T, data []byte) {
		ics, err := ReadAll(bytes.NewReader(data))
		var env *EnvelopeError
		if err != nil && !errors.As(err, &env) {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		for _, ic := range ics {
			if ic.Err != nil && (ic.Err.Note == "" || ic.Err.Err == nil) {
				t.Fatalf("refusal without a note or sentinel: %+v", ic.Err)
			}
			if ack := Acknowledge(ic, AckOptions{Now: time.Unix(0, 0), Delimiters: DefaultDelimiters}); ack != nil {
				if err := NewWriter(&bytes.Buffer{}, DefaultDelimiters, &Sequence{}).Write(ack); err != nil {
					t.Fatalf("writing the acknowledgement: %v", err)
				}
			}
			if ic.Err != nil {
				continue
			}
			// Keep only the accepted sets of accepted groups, and write them back.
			kept := &Interchange{Header: ic.Header, Delimiters: ic.Delimiters}
			for _, g := range ic.Groups {
				if g.Err != nil {
					continue
				}
				cg := *g
				cg.Sets = nil
				for _, s := range g.Sets {
					if Accepted(ic, g, s.Result) {
						cg.Sets = append(cg.Sets, s)
					}
				}
				if len(cg.Sets) > 0 {
					kept.Groups = append(kept.Groups, &cg)
				}
			}
			var buf bytes.Buffer
			if err := NewWriter(&buf, ic.Delimiters, nil).Write(kept); err != nil {
				t.Fatalf("writing accepted sets back: %v", err)
			}
			written := buf.String()
			back, err := ReadAll(&buf)
			if err != nil || len(back) != 1 || back[0].Err != nil {
				t.Fatalf("reading the rewritten interchange: %v %d %v\n%q", err, len(back), back, written)
			}
			if got, want := canon(back[0]), canon(kept); !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip changed the accepted sets:\ngot  %+v\nwant %+v\nwritten %q", got, want, written)
			}
		}
	})
}
