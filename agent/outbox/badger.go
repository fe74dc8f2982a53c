package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Badger tuning. The agent must stay light: the target is at most 40 MB of resident
// anonymous memory (RssAnon) while 1,000,000 256-byte events are buffered offline
// and then drained. Badger's anonymous memory is Go heap: memtable arenas, table
// builders (a pool keeps up to 8 of their buffers), a 3 MB flatbuffer per table
// index being built (compactions finish up to 8 + 5 tables at once) and caches.
// bench/outboxbench measures it. Peak RssAnon over buffering 1M x 256 B then
// draining them, default GOGC, on a 2-core VM:
//
//	records inline (ValueThreshold 64 KiB), 8 MiB memtable x2:  235-255 MB
//	records in the value log, 8 MiB memtable x2, 2 MiB tables:  105-125 MB
//	value log, 4 MiB memtable x1, 1 MiB tables:                  57-85 MB
//	value log, 2 MiB memtable x1, 1 MiB tables (chosen):         51-59 MB
//	value log, 1 MiB memtable, or 256-512 KiB tables:            no better
//	value log, BaseLevelSize 64-128 MiB (a single wide level):   75-90 MB
//
// Those figures were for one Badger entry per record. Records are now chunked (8 KiB
// per entry, chunk.go): the same run peaks at 14-21 MB, buffering 0.98-1.29M
// events/s instead of 378k, draining 3.2M instead of 425k (docs/performance.md).
// Before chunking, the drain peak came from compacting a million tombstones against
// the keys they delete, and GOGC=50 or GOMEMLIMIT=40MiB (process-wide settings for
// the agent's main) kept it under 40 MB.
//
// The choices:
//
//   - ValueThreshold 32 B: records of 32 bytes or more go to the value log, which
//     is append-only and mmapped (file-backed pages, not RssAnon), so the LSM tree
//     only holds 17-byte chunk keys and value pointers, and a chunk costs 41 bytes
//     of a transaction's budget whatever its size. Acknowledged space is
//     reclaimed by value-log GC once compaction has dropped the deleted keys.
//   - MemTableSize 2 MiB, NumMemtables 1: each memtable is a ~2.6 MiB Go arena and
//     at most three exist (active, queued, flushing); 4 MiB doubled the drain peak.
//     Badger caps a transaction at 15% of it: 3274 entries, so MaxBatchRecords
//     records always fit, even one per chunk.
//   - BaseTableSize 1 MiB (x2 per level), BaseLevelSize 8 MiB (x10 per level):
//     builders' buffers are twice the table size; smaller tables mean more 3 MB
//     index builds, larger ones bigger buffers.
//   - NumLevelZeroTables 1, NumLevelZeroTablesStall 8: compact L0 after every
//     memtable flush. Records are chunked (chunk.go), so a memtable holds few keys
//     for many bytes of value log, and value-log space is reclaimed only once a
//     compaction has dropped the deleted chunks' keys; the tables are small (keys
//     and value pointers), so these compactions are cheap.
//   - NumCompactors 2: the least Badger accepts, short of 0 (no compaction).
//   - BlockCacheSize 0, IndexCacheSize 0, Compression None: no caches; tables and
//     their indexes are read straight from their mmapped files (a block cache is
//     mandatory with compression, and keys and value pointers barely compress).
//   - ValueLogFileSize 64 MiB: the unit of space reclamation (GC rewrites a file
//     once 90% of it is acknowledged, so it copies little live data); files are
//     mmapped, no heap cost.
//   - VerifyValueChecksum: every value read from the value log is checked against its
//     CRC, so a corrupted record is found (Open, damage.go) instead of shipped; it cost
//     nothing measurable reading 400k records of 256 bytes (35-60 ms either way).
//   - SyncWrites: Append returns after Badger synced (msync) the value log and the
//     memtable's write-ahead log. DetectConflicts off: the outbox never reads in a
//     write transaction. MetricsEnabled off: no global expvar maps.
const (
	memTableSize    = 2 << 20
	valueThreshold  = 32
	valueLogFile    = 64 << 20
	baseTableSize   = 1 << 20
	baseLevelSize   = 8 << 20
	gcDiscardRatio  = 0.9
	nodeSize        = 96 // Badger's skl.MaxNodeSize on 64-bit platforms
	maxTxnBytes     = memTableSize * 15 / 100
	maxTxnEntries   = maxTxnBytes / nodeSize
	gcInterval      = time.Minute // value-log GC when idle
	gcKickBytes     = 64 << 20    // acknowledged bytes that trigger a GC early
	gcRoundsPerKick = 16          // each round rewrites at most one file
)

// MaxBatchRecords is the most records plus positions one Append can write: Badger
// keeps a transaction's entries, including its own commit marker, below 15% of the
// memtable size over 96 bytes.
const MaxBatchRecords = maxTxnEntries - 2

// MaxRecordBytes is the largest record Append accepts: Badger's value-log limit, less
// the length prefix a chunk adds.
const MaxRecordBytes = valueLogFile - chunkOverhead

func (o *Outbox) badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{l: log, onSyncError: o.valueLogSyncFailed, onError: o.badgerError}).
		WithVerifyValueChecksum(true).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumVersionsToKeep(1).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithMemTableSize(memTableSize).
		WithNumMemtables(1).
		WithNumLevelZeroTables(1).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithLevelSizeMultiplier(10).
		WithValueLogFileSize(valueLogFile).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(2).
		WithNumGoroutines(2)
}

// badgerLogger sends Badger's logs to slog: its chatty info lines at debug level,
// its per-write debug lines below debug (slog.LevelDebug-4), warnings at warn and
// errors at error. Formatting is skipped when the level is off.
type badgerLogger struct {
	l *slog.Logger
	// onSyncError is called with the message when Badger reports that an fsync of
	// the value log failed: Badger only logs that error (the write still succeeds),
	// so the outbox catches it here and refuses to acknowledge the batch.
	onSyncError func(msg string)
	// onError is given every error line first; when it returns true the line is not
	// logged (Open collects value read errors while it verifies the records).
	onError func(msg string) bool
}

func (b badgerLogger) logf(level slog.Level, format string, args []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (b badgerLogger) Errorf(f string, a ...any) {
	if strings.HasPrefix(f, "Error while curlf sync") && b.onSyncError != nil {
		b.onSyncError(strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
	if b.onError != nil && b.onError(strings.TrimSpace(fmt.Sprintf(f, a...))) {
		return
	}
	b.logf(slog.LevelError, f, a)
}
func (b badgerLogger) Warningf(f string, a ...any) { b.logf(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.logf(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.logf(slog.LevelDebug-4, f, a) }

// valueLogSyncFailed puts the outbox in the failed state. It runs on Badger's write
// goroutine before the callbacks of the batches in that write, so it poisons every
// batch still in flight: their Appends return the error and they are not published.
func (o *Outbox) valueLogSyncFailed(msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed == nil {
		o.failed = fmt.Errorf("outbox: value log fsync failed, reopen the outbox: %s", msg)
		o.log.Error("outbox value log fsync failed; appends refused until reopen", "err", msg)
	}
	for _, b := range o.inflight {
		if !b.done {
			b.poisoned = true
		}
	}
}

// gcLoop reclaims value-log space of acknowledged records until Close. The LSM tree
// itself is reclaimed by Badger's compactors.
func (o *Outbox) gcLoop() {
	defer close(o.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-o.closeCh:
			return
		case <-t.C:
		case <-o.gcKick:
		}
		for range gcRoundsPerKick {
			select {
			case <-o.closeCh:
				return
			default:
			}
			err := o.db.RunValueLogGC(gcDiscardRatio)
			if err == nil {
				o.log.Debug("value log file reclaimed")
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				o.log.Warn("value log GC", "err", err)
			}
			break
		}
	}
}
