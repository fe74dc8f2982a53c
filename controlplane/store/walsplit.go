package store

import (
	"github.com/hashicorp/raft"
)

// maxAppendBytes is the most entry data the store hands raft-wal in one append.
//
// raft-wal encodes each append into one write buffer that doubles until it holds the
// append and is kept until its segment file is full (64 MiB). Raft groups up to
// MaxAppendEntries entries of up to 4 MiB into one StoreLogs, so the buffer followed the
// heaviest group since the segment began: 22.6 MiB at one sample and 80.9 MiB at another
// of the same node (bench/ledgermem, docs/performance.md), the largest holder of heap
// that moved with the load. Split into appends of at most this size, the buffer stays
// at or below 16 MiB (this plus one entry, rounded up to a power of two); each append is
// one write and one fsync, and at this size a group is still a few writes.
const maxAppendBytes = 8 << 20

// splitAppends is the raft log store with StoreLogs cut into appends of at most
// maxAppendBytes of entry data (one entry larger than that is an append of its own).
// Entries are stored in order; raft counts none of them stored until StoreLogs
// returns, so a failure between two appends is a failure of the whole call, as before.
type splitAppends struct {
	raft.LogStore
}

func (s splitAppends) StoreLogs(logs []*raft.Log) error {
	for len(logs) > 0 {
		n, size := 0, 0
		for n < len(logs) && (n == 0 || size+len(logs[n].Data) <= maxAppendBytes) {
			size += len(logs[n].Data)
			n++
		}
		if err := s.LogStore.StoreLogs(logs[:n]); err != nil {
			return err
		}
		logs = logs[n:]
	}
	return nil
}

// IsMonotonic passes raft-wal's answer through (raft.MonotonicLogStore): raft removes
// the whole log after restoring a snapshot into a store that refuses gaps.
func (s splitAppends) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
