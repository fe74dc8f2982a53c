package edi

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// FuzzMap850 reads any input with internal/x12 and maps every 850 it finds. The
// mapping must not panic; an order it returns must pass canonical validation (what
// the connector publishes is never refused by the agent); a set it refuses must be
// rejected in the 997/999, and every error must name a segment.
func FuzzMap850(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.x12"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = x12.Reader{MaxSegmentLen: 4096}.Read(bytes.NewReader(data), x12.Handler{
			Set: func(ic *x12.Interchange, g *x12.Group, s *x12.Set) error {
				if s.ID != "850" {
					return nil
				}
				o, errs := Map850(s, Options{Partner: "p"})
				for _, e := range errs {
					if e.ID == "" || e.SetPos < 1 || e.Reason == "" {
						t.Fatalf("mapping error without a segment: %+v", e)
					}
				}
				Apply(g, s, errs)
				if o == nil {
					if s.Result.Status != x12.StatusRejected {
						t.Fatalf("no order but set status %s", s.Result.Status)
					}
					return nil
				}
				ev := &eventv1.Event{Payload: &eventv1.Event_Order{Order: o}}
				canonical.Normalize(ev)
				if o.OrderNumber == "" {
					t.Fatalf("order without a number: %v", o)
				}
				if err := canonical.ValidateFields(ev); err != nil {
					t.Fatalf("mapped order refused by canonical validation: %v", err)
				}
				// Round trip: the order built into an 850 maps back to itself.
				set, err := Build850(o)
				if err != nil {
					t.Fatalf("Build850 of a mapped order: %v", err)
				}
				back, errs := Map850(set, Options{Partner: "p"})
				if len(errs) > 0 || !proto.Equal(back, o) {
					t.Fatalf("round trip: errors %v\ngot  %v\nwant %v", errs, back, o)
				}
				if g.AcceptedSets < 0 || g.WithErrors < 0 || g.WithErrors > g.AcceptedSets {
					t.Fatalf("group counts broken: accepted %d with errors %d", g.AcceptedSets, g.WithErrors)
				}
				return nil
			},
		})
	})
}
