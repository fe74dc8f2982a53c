package diskguard

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDisk returns a settable free-space reading: fault injection, the tests cannot
// fill a real disk.
func fakeDisk(free uint64) (*atomic.Uint64, func() (uint64, error)) {
	var v atomic.Uint64
	v.Store(free)
	return &v, func() (uint64, error) { return v.Load(), nil }
}

func TestLocalLowRefusesUntilFreed(t *testing.T) {
	free, read := fakeDisk(5 << 30)
	g := New(Options{Node: "n1", MinFree: 1 << 30, Free: read})
	if err := g.Check(); err != nil {
		t.Fatalf("before any sample: %v, want nil", err)
	}
	if _, err := g.Sample(); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(); err != nil {
		t.Fatalf("5 GiB free, 1 GiB kept: %v, want nil", err)
	}
	free.Store(512 << 20)
	if _, err := g.Sample(); err != nil {
		t.Fatal(err)
	}
	err := g.Check()
	var low *LowError
	if !errors.Is(err, ErrLow) || !errors.As(err, &low) || low.Node != "n1" || low.Free != 512<<20 || low.Min != 1<<30 {
		t.Fatalf("512 MiB free: %v, want a LowError of n1", err)
	}
	if !strings.Contains(err.Error(), "node n1 has 512 MiB free and keeps 1024 MiB free") {
		t.Fatalf("reason: %q", err)
	}
	free.Store(2 << 30)
	_, _ = g.Sample()
	if err := g.Check(); err != nil {
		t.Fatalf("freed: %v, want nil", err)
	}
}

func TestPeerReportsAndExpiry(t *testing.T) {
	_, read := fakeDisk(5 << 30)
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	g := New(Options{Node: "n1", Free: read, Now: func() time.Time { return now }})
	_, _ = g.Sample()
	g.Record(Status{Node: "n2", Free: 3 << 30, Min: 1 << 30})
	if err := g.Check(); err != nil {
		t.Fatalf("n2 above its minimum: %v", err)
	}
	g.Record(Status{Node: "n2", Free: 900 << 20, Min: 1 << 30})
	g.Record(Status{Node: "n3", Free: 100 << 20, Min: 1 << 30})
	g.Record(Status{Node: "n4", Free: 10 << 20, Off: true}) // guard off there: never low
	var low *LowError
	if err := g.Check(); !errors.As(err, &low) || low.Node != "n3" {
		t.Fatalf("n2 and n3 short: %v, want n3 (least free)", err)
	}
	if d := g.Nodes(); len(d) != 4 || d["n1"].Free != 5<<30 || d["n2"].Free != 900<<20 {
		t.Fatalf("Nodes: %+v", d)
	}
	// A report about this node from elsewhere is ignored; this node's sample counts.
	g.Record(Status{Node: "n1", Free: 1, Min: 1 << 30})
	if d := g.Nodes(); d["n1"].Free != 5<<30 {
		t.Fatalf("n1 after a foreign report of it: %+v", d["n1"])
	}
	now = now.Add(ReportTTL + time.Second)
	if err := g.Check(); err != nil {
		t.Fatalf("reports older than ReportTTL: %v, want nil (a node that stopped reporting does not hold writes back)", err)
	}
	if d := g.Nodes(); len(d) != 1 {
		t.Fatalf("expired reports still listed: %+v", d)
	}
}

func TestDefaultsOffAndUnknown(t *testing.T) {
	_, read := fakeDisk(100 << 20)
	g := New(Options{Node: "n1", Free: read})
	st, _ := g.Sample()
	if st.Min != DefaultMinFree || !st.Low() || g.Check() == nil {
		t.Fatalf("default minimum: %+v, check %v", st, g.Check())
	}
	off := New(Options{Node: "n1", MinFree: -1, Free: read})
	if st, _ := off.Sample(); !st.Off || st.Low() || off.Check() != nil {
		t.Fatalf("guard off: %+v, check %v", st, off.Check())
	}
	broken := New(Options{Node: "n1", Free: func() (uint64, error) { return 0, errors.New("statfs: no such file") }})
	if _, err := broken.Sample(); err == nil {
		t.Fatal("a failed statfs returned no error")
	}
	if err := broken.Check(); err != nil {
		t.Fatalf("free space unknown: %v, want nil (writes go through)", err)
	}
}

func TestStatfsOnRealDir(t *testing.T) {
	g := New(Options{Node: "n1", Dir: t.TempDir(), MinFree: 1})
	st, err := g.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if st.Free == 0 {
		t.Fatal("statfs of a temporary dir says 0 bytes free")
	}
}
