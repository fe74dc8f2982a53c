package edi

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/x12"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// golden compares got with testdata/golden/name, rewriting it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file %s: %v (run go test -run %s -update)", path, err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

var testTime = time.Date(2026, 12, 4, 11, 5, 0, 0, time.UTC)

// inbound is an interchange read by internal/x12 with every 850 mapped through
// Map850 and Apply, as the EDI connector does.
type inbound struct {
	ic     *x12.Interchange
	orders map[string]*mapped // by ST02
}

type mapped struct {
	set  *x12.Set
	errs []x12.SegmentError
	ok   bool // order returned
}

func readMapped(t *testing.T, data []byte) (*inbound, map[string]*mapped) {
	t.Helper()
	in := &inbound{orders: map[string]*mapped{}}
	err := x12.Read(bytes.NewReader(data), x12.Handler{
		Set: func(ic *x12.Interchange, g *x12.Group, s *x12.Set) error {
			g.Sets = append(g.Sets, s)
			if s.ID != "850" {
				return nil
			}
			o, errs := Map850(s, Options{})
			Apply(g, s, errs)
			in.orders[s.Control] = &mapped{set: s, errs: errs, ok: o != nil}
			return nil
		},
		InterchangeEnd: func(ic *x12.Interchange) error { in.ic = ic; return nil },
	})
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if in.ic == nil {
		t.Fatal("no interchange read")
	}
	return in, in.orders
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// readSets reads data with internal/x12 and returns its interchanges, failing on any
// envelope or syntax problem: what we write must read back clean.
func readClean(t *testing.T, data []byte) []*x12.Interchange {
	t.Helper()
	ics, err := x12.ReadAll(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("reading back: %v\n%s", err, data)
	}
	for _, ic := range ics {
		if ic.Err != nil || len(ic.Noted) > 0 {
			t.Fatalf("interchange not clean: %v %v", ic.Err, ic.Noted)
		}
		for _, g := range ic.Groups {
			if st, _ := x12.GroupStatus(g); st != x12.StatusAccepted {
				t.Fatalf("group %s read back with status %s: %+v", g.Control, st, g.Results)
			}
		}
	}
	return ics
}
