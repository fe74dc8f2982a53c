package archive_test

import (
	"testing"

	"github.com/crossdock/crossdock/controlplane/archive"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// FuzzDecodeFile feeds arbitrary bytes to the record decoder: it returns an error or
// events, never panics, and never yields more records than the bytes could hold.
// Seeds: testdata/fuzz/FuzzDecodeFile (a real file, and that file truncated).
func FuzzDecodeFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		_ = archive.DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
			n++
			return nil
		})
		// Each record takes at least one byte (its length) after decompression; gzip
		// cannot expand beyond about 1032:1.
		if n > len(data)*1100+1 {
			t.Fatalf("%d records from %d bytes", n, len(data))
		}
	})
}

// FuzzParseManifest: a manifest either fails to parse or parses into one whose entries
// all hold the checks (names under the day, matching seqs), and it parses again the same
// after encoding. Seeds: testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := archive.ParseManifest(b)
		if err != nil {
			return
		}
		again, err := archive.ParseManifest(archive.EncodeManifest(m))
		if err != nil {
			t.Fatalf("a parsed manifest does not parse again after encoding: %v", err)
		}
		if len(again.Files) != len(m.Files) || again.Day != m.Day {
			t.Fatalf("round trip changed the manifest: %+v -> %+v", m, again)
		}
		for _, fi := range m.Files {
			if fi.Day() != m.Day || fi.FirstSeq > fi.LastSeq || fi.Events == 0 {
				t.Fatalf("accepted an entry that breaks the rules: %+v in day %s", fi, m.Day)
			}
		}
	})
}
