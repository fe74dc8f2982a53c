package store

import (
	"github.com/hashicorp/raft"
)

// maxAppendBytes is the most entry data the store hands raft-wal in one append.
//
// raft-wal encodes each append into its segment writer's buffer, which doubles until
// it holds the append and never shrinks; a sealed segment keeps its writer, buffer
// included, as its reader until the log is truncated past it. Raft groups up to
// MaxAppendEntries entries of up to 4 MiB into one StoreLogs, so each 64 MiB segment of
// the log could keep a buffer of up to 256 MiB. Split into appends of at most this
// size, a segment's buffer is at most 16 MiB (this plus one entry, rounded up to a
// power of two). Each append is one write and one fsync, so a group of 64 uplink
// batches of 1,000 events (22 MiB) is three. In practice, with groups of a few entries,
// a segment keeps about 1 MiB (bench/ledgermem, docs/performance.md).
const maxAppendBytes = 8 << 20

// splitAppends is the raft log store with StoreLogs cut into appends of at most
// maxAppendBytes of entry data (one entry larger than that is an append of its own).
// Entries are stored in order; raft counts none of them stored until StoreLogs
// returns, so a failure between two appends is a failure of the whole call, as before.
// size, when set, counts what is written and deleted (logbound.go).
type splitAppends struct {
	raft.LogStore
	size *logSize
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
		if s.size != nil {
			s.size.stored(logs[n-1].Index, uint64(size))
		}
		logs = logs[n:]
	}
	return nil
}

func (s splitAppends) DeleteRange(min, max uint64) error {
	if err := s.LogStore.DeleteRange(min, max); err != nil {
		return err
	}
	if s.size != nil {
		s.size.deleted(min, max)
	}
	return nil
}

// IsMonotonic passes raft-wal's answer through (raft.MonotonicLogStore): raft removes
// the whole log after restoring a snapshot into a store that refuses gaps.
func (s splitAppends) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
