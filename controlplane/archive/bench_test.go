package archive_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
)

// BenchmarkArchive measures what a prune's Apply spends archiving 20,000 events of one
// day (one file per type and the manifest), fsyncs included.
func BenchmarkArchive(b *testing.B) {
	evs := testEvents(1, 20000, day1.Add(-20*time.Hour))
	for i, e := range evs {
		e.CommittedAt = timestamppb.New(day1.Add(-20*time.Hour + time.Duration(i)*time.Second))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d, err := archive.OpenDir(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Archive(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20000, "ns/event")
}

// BenchmarkRead measures reading 20,000 archived events back (checksum, decode, merge).
func BenchmarkRead(b *testing.B) {
	d, err := archive.OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Archive(context.Background(), testEvents(1, 20000, day1)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		it, err := d.Events(context.Background(), archive.Filter{})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			if _, err := it.Next(); err != nil {
				break
			}
			n++
		}
		if n != 20000 {
			b.Fatalf("read %d", n)
		}
	}
}
