package ledger

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// reopenTables reopens the ledger in dir (so Close has flushed its memtable into
// tables) and counts its tables by compression (tableKinds).
func reopenTables(t *testing.T, dir string) (*Ledger, map[options.CompressionType]int) {
	t.Helper()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return l, tableKinds(t, l.cur.db.Opts().Dir)
}

// tableKinds counts the tables of the Badger database in dir (open or closed) by the
// compression its manifest records for each.
func tableKinds(t *testing.T, dir string) map[options.CompressionType]int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := badger.DefaultOptions(dir)
	m, _, err := badger.ReplayManifestFile(f, o.ExternalMagicVersion, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Tables) == 0 {
		t.Fatal("no tables in the manifest")
	}
	byKind := map[options.CompressionType]int{}
	for _, tm := range m.Tables {
		byKind[tm.Compression]++
	}
	return byKind
}

// TestTablesUncompressedNoCache: the ledger writes its tables uncompressed and keeps
// no block or index cache, so a read takes its block from the table's mapping (page
// cache), not from a copy in the heap.
func TestTablesUncompressedNoCache(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := newKeyLog(t)
	k.add(flushSeqs+10, 500, skuKeys(100), l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, tables := reopenTables(t, dir)
	defer l.Close()
	o := l.cur.db.Opts()
	if o.Compression != options.None || o.BlockCacheSize != 0 || o.IndexCacheSize != 0 {
		t.Errorf("compression %v, block cache %d, index cache %d: want none, 0, 0", o.Compression, o.BlockCacheSize, o.IndexCacheSize)
	}
	if l.cur.db.BlockCacheMetrics() != nil {
		t.Error("Badger has a block cache")
	}
	if tables[options.None] == 0 || len(tables) != 1 {
		t.Errorf("tables by compression %v, want all uncompressed (%d)", tables, options.None)
	}
	checkIDs(t, l, k)
}

// TestCompressedTablesStillRead: a ledger whose tables an earlier version wrote with
// Snappy, read through a block cache, opens without either (Badger opens the old
// tables, and reads or compacts them, decompressing each block without a cache), reads
// the same events back and still recognises every id; new tables are written
// uncompressed.
func TestCompressedTablesStillRead(t *testing.T) {
	dir := t.TempDir()
	tableCompression, tableBlockCache = options.Snappy, 16<<20
	l, err := Open(Options{Dir: dir})
	tableCompression, tableBlockCache = options.None, 0
	if err != nil {
		t.Fatal(err)
	}
	k := newKeyLog(t)
	k.add(flushSeqs*2+10, 500, skuKeys(100), l)
	hash := mustHash(t, l)
	events := listAll(t, l, Filter{}, 1, 1000)
	bdir := l.cur.db.Opts().Dir
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Read while closed: once reopened, a compaction may rewrite them uncompressed at
	// any moment.
	if tables := tableKinds(t, bdir); tables[options.Snappy] == 0 {
		t.Fatalf("tables by compression %v: none written with Snappy, so the test reads nothing an earlier version wrote", tables)
	}

	l, _ = reopenTables(t, dir)
	defer l.Close()
	if o := l.cur.db.Opts(); o.Compression != options.None || o.BlockCacheSize != 0 {
		t.Fatalf("reopened with compression %v and a %d-byte block cache, want none and 0", o.Compression, o.BlockCacheSize)
	}
	if got := mustHash(t, l); got != hash {
		t.Errorf("hash %s after reopening, %s before", got, hash)
	}
	if got := listAll(t, l, Filter{}, 1, 1000); len(got) != len(events) || len(got) == 0 || got[len(got)-1].GetSeq() != events[len(events)-1].GetSeq() {
		t.Errorf("read %d events back, last seq %d; wrote %d", len(got), got[len(got)-1].GetSeq(), len(events))
	}
	checkIDs(t, l, k)

	// What is written now goes into uncompressed tables beside the old ones.
	k.add(flushSeqs+10, 500, skuKeys(100), l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, tables2 := reopenTables(t, dir)
	defer l2.Close()
	if tables2[options.None] == 0 {
		t.Errorf("tables by compression %v: none uncompressed after writing with the new options", tables2)
	}
	checkIDs(t, l2, k)
}
