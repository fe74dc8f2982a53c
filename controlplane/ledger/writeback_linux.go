//go:build linux

package ledger

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing n bytes of f from off to disk and
// does not wait for it (sync_file_range with SYNC_FILE_RANGE_WRITE), so the fsync that
// seals a segment, or the one before a raft snapshot, finds little left to write: a
// segment's 64 MiB written back by one fsync held up the raft log's own fsyncs
// (RocksDB's bytes_per_sync does the same).
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
