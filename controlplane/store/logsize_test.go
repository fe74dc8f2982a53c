package store

import (
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
)

// TestLogSize: the byte count follows writes, a prefix removed after a snapshot, a
// conflicting suffix removed on a follower and the whole log removed by a restore; the
// trailing entries within a byte budget are counted from the newest write back.
func TestLogSize(t *testing.T) {
	var l logSize
	l.deleted(1, 0) // an empty log: nothing to remove
	for i := uint64(1); i <= 10; i++ {
		l.stored(i*10, 1000) // writes of 10 entries of 100 bytes: indexes 1..100
	}
	check := func(what string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: %d, want %d", what, got, want)
		}
	}
	check("total", l.total(), 10_000)
	check("trailing within 2,500 bytes (whole writes)", l.trailing(2500), 20)
	check("trailing within 3,000 bytes", l.trailing(3000), 30)
	check("trailing within more than the log", l.trailing(1<<20), 100)
	check("trailing within less than a write", l.trailing(10), 0)

	l.deleted(1, 35) // compaction up to 35, inside the fourth write
	check("total after a prefix", l.total(), 6500)
	check("trailing within more than the log after a prefix", l.trailing(1<<20), 65)
	l.deleted(36, 40) // the rest of the fourth write
	check("total after the rest of a write", l.total(), 6000)

	l.deleted(71, 100) // a follower drops a conflicting suffix
	check("total after a suffix", l.total(), 3000)
	l.stored(75, 800) // and writes the leader's entries 71..75 instead
	check("total after the rewrite", l.total(), 3800)
	check("trailing after the rewrite", l.trailing(800), 5)

	l.deleted(41, 75) // a restore removes the whole log
	check("total after a restore", l.total(), 0)
	l.stored(500, 4000) // entries after the restored snapshot's index
	check("total after entries past a restore", l.total(), 4000)
	check("trailing past a restore", l.trailing(1<<20), 500-75)
}

// TestLogSizeEstimate: a store opened on an existing raft log seeds its count from a
// sample of the entries already there (real raft-wal).
func TestLogSizeEstimate(t *testing.T) {
	wal, err := raftwal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	var l logSize
	if err := l.estimate(wal, 16); err != nil {
		t.Fatal(err)
	}
	if l.total() != 0 {
		t.Fatalf("an empty log counts %d bytes", l.total())
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 1000; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: make([]byte, 100+i%3*50)})
	}
	if err := wal.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := l.estimate(wal, 16); err != nil {
		t.Fatal(err)
	}
	// 150,000 bytes stored; sampled every 62nd entry from 1, the three sizes take turns
	// and the estimate is within a tenth.
	if got := l.total(); got < 135_000 || got > 165_000 {
		t.Fatalf("estimated %d bytes in a log of 150,000", got)
	}
	if got := l.trailing(1 << 30); got != 1000 {
		t.Fatalf("trailing entries %d, want the whole log of 1,000", got)
	}
}
