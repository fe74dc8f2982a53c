package store

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
)

// appendSizes wraps a log store and records the entry bytes of each StoreLogs call
// (an observer around the real raft-wal, not a fake).
type appendSizes struct {
	raft.LogStore
	calls [][]int
}

func (a *appendSizes) StoreLogs(logs []*raft.Log) error {
	var sizes []int
	for _, l := range logs {
		sizes = append(sizes, len(l.Data))
	}
	a.calls = append(a.calls, sizes)
	return a.LogStore.StoreLogs(logs)
}

// TestSplitAppends: one StoreLogs of a raft group larger than maxAppendBytes reaches
// raft-wal as appends of at most that much (an entry larger than it alone), every entry
// is stored in order with its data, and raft still sees a monotonic store.
func TestSplitAppends(t *testing.T) {
	wal, err := raftwal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	rec := &appendSizes{LogStore: wal}
	store := splitAppends{LogStore: rec}

	sizes := []int{3 << 20, 3 << 20, 3 << 20, 10 << 20, 1 << 10, 4 << 20, 4 << 20, 4<<20 + 1}
	var logs []*raft.Log
	for i, n := range sizes {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte('a' + i)}, n)})
	}
	if err := store.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	var seen []int
	for _, call := range rec.calls {
		total := 0
		for _, n := range call {
			total += n
		}
		if total > maxAppendBytes && len(call) > 1 {
			t.Errorf("an append of %d entries and %d bytes: want at most %d bytes unless it is one entry", len(call), total, maxAppendBytes)
		}
		seen = append(seen, call...)
	}
	if len(rec.calls) < 4 {
		t.Errorf("%d appends for %d bytes: want the group split", len(rec.calls), 34<<20)
	}
	if len(seen) != len(sizes) {
		t.Fatalf("appended %d entries, want %d", len(seen), len(sizes))
	}
	for i, n := range sizes {
		var l raft.Log
		if err := wal.GetLog(uint64(i+1), &l); err != nil {
			t.Fatalf("entry %d: %v", i+1, err)
		}
		if len(l.Data) != n || l.Data[0] != byte('a'+i) {
			t.Fatalf("entry %d: %d bytes of %q, want %d of %q", i+1, len(l.Data), l.Data[:1], n, byte('a'+i))
		}
	}
	cache, err := raft.NewLogCache(4, splitAppends{LogStore: wal})
	if err != nil {
		t.Fatal(err)
	}
	if !cache.IsMonotonic() {
		t.Fatal("the split store behind raft's log cache is not monotonic; raft-wal is")
	}
}
