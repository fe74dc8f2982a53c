package archive_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFuzzSeeds writes the fuzzers' seed corpus from a real archive
// (CROSSDOCK_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./controlplane/archive/).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("CROSSDOCK_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set CROSSDOCK_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	d, root := openDir(t)
	if err := d.Archive(context.Background(), testEvents(1, 6, day1)); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(root, "2026/12/03/order/000000000002-000000000006.pb.gz"))
	if err != nil {
		t.Fatal(err)
	}
	man, err := os.ReadFile(filepath.Join(root, "2026/12/03/manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(fuzzer, name string, b []byte) {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("FuzzDecodeFile", "file", file)
	write("FuzzDecodeFile", "truncated", file[:len(file)-12])
	write("FuzzDecodeFile", "empty", nil)
	write("FuzzParseManifest", "manifest", man)
	write("FuzzParseManifest", "empty-day", []byte(`{"version":1,"day":"2026-12-04","files":[]}`))
	write("FuzzParseManifest", "escape", []byte(`{"version":1,"day":"2026-12-04","files":[{"name":"../../etc/passwd","type":"x","events":1,"firstSeq":1,"lastSeq":1}]}`))
}
