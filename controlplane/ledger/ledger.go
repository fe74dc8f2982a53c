// Package ledger is the control plane's whole replicated state, in Badger, not only
// the event ledger its name comes from. Where each part lives:
//
//   - events, their id, key and type indexes: apply.go, handlers.go (INGEST_BATCH),
//     log.go, postings.go, idruns.go, idfilter.go, scan.go, query.go;
//   - agents (incarnations, certificates, bound outbox, conflicts) and enrollment and
//     admin tokens, the cluster CA: handlers.go, cluster.go;
//   - control plane nodes: nodes.go;
//   - routing documents (destinations, routes, policies) with history: documents.go;
//   - delivery cursors, dead letters and replays: delivery.go;
//   - snapshots of all of it: snapshot.go.
//
// The key layout of every part is in DESIGN.md.
//
// It is the command processor behind the Raft FSM (controlplane/store): the FSM decodes
// a log entry and calls [Ledger.Apply], which runs the handler for the command type and
// records the entry's index in the same Badger transaction. Recovery and tests apply
// commands directly, without a Raft. Reads ([Ledger.ListEvents], [Ledger.Agent], ...)
// run in Badger read transactions and are safe while Apply runs.
//
// Snapshots ([Ledger.OpenSnapshot], [Ledger.Restore]) stream the whole key space in a
// self-checking format; see DESIGN.md beside this file for the key layout, the size
// limits of a batch and how Restore swaps state atomically.
package ledger

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/crossdock/crossdock/internal/platform/mapadvise"

	"github.com/crossdock/crossdock/internal/platform/fsutil"
)

// Errors returned by the ledger. The token errors are not returned by Apply: a refused
// enrollment is a result (a ConsumeTokenResult whose Error starts with the sentinel's
// text); [ConsumeTokenError] turns it back into an error that wraps the sentinel.
var (
	// ErrUnknownCommand means a log entry has a command type this build does not know
	// and is not marked ignorable. The node must stop: skipping it would diverge.
	ErrUnknownCommand = errors.New("ledger: unknown command type")
	// ErrTokenNotFound means no enrollment token has the id presented.
	ErrTokenNotFound = errors.New("enrollment token not found (it may have been forged or created on another cluster)")
	// ErrTokenUsed means the enrollment token was consumed before.
	ErrTokenUsed = errors.New("enrollment token already used")
	// ErrTokenExpired means the enrollment token was presented after its expiry.
	ErrTokenExpired = errors.New("enrollment token expired")
	// ErrTokenSecret means the secret presented does not hash to the stored one.
	ErrTokenSecret = errors.New("enrollment token secret does not match")
	// ErrAgentEnrolled means a token without replace named an agent that is enrolled
	// (or revoked).
	ErrAgentEnrolled = errors.New("agent name already enrolled")
	// ErrAgentNotFound is the result of an agent command naming no enrolled agent.
	ErrAgentNotFound = errors.New("no such agent")
	// ErrOtherOutbox is the result of a BIND_AGENT for an outbox other than the one
	// the agent's incarnation is bound to.
	ErrOtherOutbox = errors.New("agent identity is in use with another outbox")
	// ErrTokenExists is the result of a PUT_TOKEN whose id is already stored.
	ErrTokenExists = errors.New("enrollment token id already exists")
	// ErrCAExists is the result of a PUT_CA when the cluster already has a CA.
	ErrCAExists = errors.New("cluster CA already stored; it is never replaced")
	// ErrInvalidCommand is the result of a command whose fields cannot be stored (e.g.
	// an empty or oversized id). It is a refusal, not an Apply error.
	ErrInvalidCommand = errors.New("ledger: invalid command")
	// ErrSnapshotCorrupt means a snapshot stream failed verification (magic, framing,
	// key order or trailer checksum). The ledger's state is unchanged.
	ErrSnapshotCorrupt = errors.New("ledger: snapshot is corrupt or truncated")
	// ErrClosed means the ledger has been closed.
	ErrClosed = errors.New("ledger: closed")
)

// Options configures Open.
type Options struct {
	// Dir holds the ledger's files (required unless InMemory).
	Dir string
	// Logger receives Badger's warnings and the ledger's own messages; discarded if nil.
	Logger *slog.Logger
	// InMemory keeps everything in memory (tests, scratch ledgers).
	InMemory bool
	// Archiver receives the events PRUNE_LEDGER removes, before they are deleted; nil
	// archives nothing (prune.go).
	Archiver Archiver
}

// Ledger is the FSM state. Apply and Restore must not be called concurrently with each
// other (the FSM calls them from one goroutine; the ledger serializes them anyway);
// every other method is safe for concurrent use.
type Ledger struct {
	opts   Options
	logger *slog.Logger
	space  filterSpace // where the id filters live (filterspace.go)

	// applyMu serializes Apply, Restore and Close.
	applyMu sync.Mutex

	mu      sync.Mutex // guards cur, closed, changed and handle refs
	cur     *handle
	closed  bool
	changed chan struct{}

	applied atomic.Uint64 // cache of m/applied in cur
	lastSeq atomic.Uint64 // cache of m/seq in cur
	// restores counts the snapshots restored since Open (Restores).
	restores atomic.Uint64
}

// handle is one Badger database. Restore replaces the current handle; the old one is
// closed (and its directory removed) when its last reader releases it.
type handle struct {
	db         *badger.DB
	dir        string // "" when in memory
	refs       int
	retired    bool
	remove     bool            // delete dir once closed (replaced by a Restore)
	done       chan struct{}   // closed once db is closed
	unwatch    chan struct{}   // stops mapadvise.Watch and the value log GC; closed before db is closed
	watched    <-chan struct{} // closed once mapadvise.Watch has stopped
	gcDone     <-chan struct{} // closed once the value log GC has stopped
	post       *postings       // db's in-memory index state: unflushed key lists and ids, id filters
	segs       *segments       // the segment files holding db's log chunks (segments.go)
	workerDone <-chan struct{} // closed once the segment worker has stopped (on disk)
	err        error           // db.Close's error, valid after done
}

const currentFile = "CURRENT"

// Open opens (or creates) the ledger in opts.Dir.
//
// On disk the ledger is Dir/CURRENT, naming the live Badger directory (Dir/db-N).
// Leftovers of an interrupted Restore are removed here.
func Open(opts Options) (*Ledger, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{opts: opts, logger: logger, changed: make(chan struct{})}
	var (
		h   *handle
		err error
	)
	if opts.InMemory {
		h, err = l.openHandle("")
	} else {
		h, err = l.openDir()
	}
	if err != nil {
		return nil, err
	}
	l.cur = h
	if !opts.InMemory {
		if l.space, err = newFilterSpace(opts.Dir); err != nil {
			l.closeHandle(h)
			return nil, err
		}
	}
	if err := l.loadCounters(h); err != nil {
		l.closeHandle(h)
		return nil, err
	}
	if err := l.checkFormat(h); err != nil {
		l.closeHandle(h)
		return nil, err
	}
	if h.post, err = loadPostings(h.db, h.segs, l.space); err != nil {
		l.closeHandle(h)
		return nil, err
	}
	return l, nil
}

func (l *Ledger) openDir() (*handle, error) {
	dir := l.opts.Dir
	if dir == "" {
		return nil, errors.New("ledger: Options.Dir is required unless InMemory is set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger: create %s: %w", dir, err)
	}
	name, err := readCurrent(dir)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = dbDirName(1)
		if err := writeCurrent(dir, name); err != nil {
			return nil, err
		}
	}
	if err := removeStale(dir, name); err != nil {
		return nil, err
	}
	return l.openHandle(filepath.Join(dir, name))
}

func dbDirName(n uint64) string { return fmt.Sprintf("db-%020d", n) }

// nextDBDir names the directory the next Restore loads into.
func nextDBDir(cur string) (string, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(filepath.Base(cur), "db-"), 10, 64)
	if err != nil {
		return "", fmt.Errorf("ledger: unexpected database directory %q", cur)
	}
	return filepath.Join(filepath.Dir(cur), dbDirName(n+1)), nil
}

func readCurrent(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, currentFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: read %s: %w", currentFile, err)
	}
	name := strings.TrimSpace(string(b))
	if !strings.HasPrefix(name, "db-") || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("ledger: %s in %s names %q, not a database directory; the ledger directory is damaged", currentFile, dir, name)
	}
	return name, nil
}

// writeCurrent points CURRENT at name atomically and durably (write, fsync, rename,
// fsync the directory).
func writeCurrent(dir, name string) error {
	tmp := filepath.Join(dir, currentFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("ledger: write %s: %w", currentFile, err)
	}
	_, err = f.WriteString(name + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, currentFile))
	}
	if err == nil {
		err = fsutil.SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("ledger: write %s: %w", currentFile, err)
	}
	return nil
}

// removeStale deletes database directories other than the live one and spooled
// restore files: what an interrupted Restore or a crash before cleanup leaves behind.
func removeStale(dir, live string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("ledger: read %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if (strings.HasPrefix(n, "db-") && n != live) || strings.HasPrefix(n, restoreSpoolPrefix) || n == currentFile+".tmp" {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("ledger: remove stale %s: %w", n, err)
			}
		}
	}
	return nil
}

// Badger sizing. A transaction may hold at most 15% of MemTableSize in bytes and that
// divided by a skiplist node size (96 bytes) in entries: 128 MiB gives about 19 MiB and
// 209,000 entries, above the apply budget (applyBudgetBytes, applyBudgetEntries), so an
// Apply never fails with ErrTxnTooBig.
const (
	memTableSize = 128 << 20
	numMemtables = 3
	// valueThreshold: values above it go to the value log, the LSM tree keeps a pointer.
	// Id run blocks and large key index records are above it, so the LSM tree holds
	// keys, indexes and small records, and its compactions rewrite those only. Log
	// chunks are in segment files (segments.go); in layout 6 they were in the value log,
	// and with 64 KiB before that in the LSM tree, where under retention every node
	// compacted its level 0 (hundreds of MiB of events and their tombstones) at the same
	// moment every few minutes and the committed rate dipped (docs/performance.md, the
	// soaks of 2026-12-05).
	valueThreshold = 1 << 10
	// valueLogFileSize is small enough that the value log rotates often: Badger
	// rewrites only whole, inactive files, so with its default (1 GiB) the id runs
	// retention deletes would stay on disk for a gigabyte of them.
	valueLogFileSize = 128 << 20
	// vlogGCInterval is how often a ledger on disk asks Badger to rewrite value log
	// files that are mostly garbage (vlogGCRatio or more discarded: deleted id runs, and
	// the chunks of a layout 6 database).
	vlogGCInterval = time.Minute
	vlogGCRatio    = 0.5
	// numLevelZeroTables is how many memtable flushes level 0 holds before Badger
	// compacts it (Badger's default is 5). Value log GC can only rewrite what a
	// compaction has counted as discarded, so with 5 the id runs retention deletes stayed
	// in the value log for five memtable cycles: with a 128 MiB memtable at 5,000
	// events/s, about 90 minutes in which the data dir grew by some 14 MiB a minute
	// (the one-hour soak of 2026-12-06, docs/performance.md). With 1, every flush is
	// compacted and the value log is reclaimed once a cycle.
	numLevelZeroTables = 1
)

// The LSM tree's tables are written uncompressed and read with no block cache (what
// agent/outbox does too): a read takes its block straight from the table's mapping,
// which is page cache the kernel can drop, not the process's anonymous memory. A
// block cache is mandatory with compression, and it held what the node had read in
// the heap: after a restart the views read the whole log back, and a restarted
// 16-million-event node's RssAnon was 62 MiB against 44 at 4 million
// (docs/performance.md, nineteenth session). The tables hold keys, value pointers
// and small records, so compression saved little. Indexes and Bloom filters are read
// in place from the mappings too (IndexCacheSize only applies to encrypted tables).
// Badger records each table's compression in its manifest, so tables an earlier
// version compressed stay readable (each read decompresses its block) until
// compaction rewrites them.
//
// They are variables only for TestCompressedTablesStillRead, which writes tables the
// way earlier versions did.
var (
	tableCompression = options.None
	tableBlockCache  = int64(0)
)

func (l *Ledger) openHandle(dir string) (*handle, error) {
	var o badger.Options
	if dir == "" {
		// In memory there is no value log: every value must be under the threshold.
		o = badger.DefaultOptions("").WithInMemory(true).WithValueThreshold(MaxEventBytes)
	} else {
		o = badger.DefaultOptions(dir).WithValueThreshold(valueThreshold).WithValueLogFileSize(valueLogFileSize)
	}
	o = o.WithSyncWrites(false). // the Raft log is the durable record; see Sync
					WithMemTableSize(memTableSize).
					WithNumMemtables(numMemtables).
					WithNumLevelZeroTables(numLevelZeroTables).
					WithCompression(tableCompression).
					WithBlockCacheSize(tableBlockCache).
					WithIndexCacheSize(0).
					WithMetricsEnabled(false).
					WithDetectConflicts(false). // Apply and Restore are serialized (applyMu)
					WithLogger(badgerLogger{l.logger})
	db, err := badger.Open(o)
	if err != nil {
		where := dir
		if where == "" {
			where = "memory"
		}
		return nil, fmt.Errorf("ledger: open badger in %s: %w", where, err)
	}
	h := &handle{db: db, dir: dir, done: make(chan struct{}), unwatch: make(chan struct{})}
	if h.segs, err = openSegments(dir, db); err != nil {
		db.Close()
		return nil, err
	}
	if dir != "" {
		h.workerDone = l.segmentWorker(h)
		h.watched = mapadvise.Watch(dir, h.unwatch, l.logger)
		h.gcDone = l.valueLogGC(h)
	}
	return h, nil
}

func (l *Ledger) loadCounters(h *handle) error {
	var applied, seq uint64
	err := h.db.View(func(txn *badger.Txn) error {
		var err error
		if applied, err = getU64(txn, keyApplied); err != nil {
			return err
		}
		seq, err = getU64(txn, keySeq)
		return err
	})
	if err != nil {
		return fmt.Errorf("ledger: read counters: %w", err)
	}
	l.applied.Store(applied)
	l.lastSeq.Store(seq)
	return nil
}

// ErrFormat means the ledger's files were written with a layout this build does not
// read (an earlier build's). The ledger is derived state: remove the node's data
// directory and let it rejoin, or restore a backup taken by this build.
var ErrFormat = errors.New("ledger: stored layout is not this build's")

// checkFormat records the layout version in a new database and refuses one written with
// another layout.
func (l *Ledger) checkFormat(h *handle) error {
	var (
		v  uint64
		ok bool
	)
	err := h.db.View(func(txn *badger.Txn) error {
		b, found, err := getValue(txn, keyFormat)
		if err != nil || !found {
			return err
		}
		ok = true
		v, err = decodeU64(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("ledger: read layout version: %w", err)
	}
	where := h.dir
	if where == "" {
		where = "memory"
	}
	switch {
	case ok && v == ledgerFormat:
		return nil
	case ok && ledgerFormatUpgradable(v):
		l.logger.Info("ledger: upgrading layout in place", "dir", where, "from", v, "to", ledgerFormat)
	case ok:
		return fmt.Errorf("%w: %s has layout %d, this build reads layout %d", ErrFormat, where, v, ledgerFormat)
	case l.applied.Load() != 0:
		return fmt.Errorf("%w: %s has layout 1 (one record per event, from an earlier build), this build reads layout %d; remove the directory and let the node rejoin", ErrFormat, where, ledgerFormat)
	}
	err = h.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFormat, u64(ledgerFormat)) })
	if err != nil {
		return fmt.Errorf("ledger: write layout version: %w", err)
	}
	return nil
}

// acquire pins the current database for a read or write; release unpins it.
func (l *Ledger) acquire() (*handle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	l.cur.refs++
	return l.cur, nil
}

func (l *Ledger) release(h *handle) {
	l.mu.Lock()
	h.refs--
	last := h.refs == 0 && h.retired
	l.mu.Unlock()
	if last {
		l.closeHandle(h)
	}
}

// retireLocked marks h as no longer current; it is closed now (closeNow) or when its
// last user releases it, and its directory deleted if remove. The caller holds l.mu.
func (l *Ledger) retireLocked(h *handle, remove bool) (closeNow bool) {
	h.retired = true
	h.remove = remove
	return h.refs == 0
}

func (l *Ledger) closeHandle(h *handle) {
	close(h.unwatch)
	if h.watched != nil {
		<-h.watched
	}
	if h.gcDone != nil {
		<-h.gcDone
	}
	if h.workerDone != nil {
		<-h.workerDone
	}
	if err := h.segs.syncAll(); err != nil {
		l.logger.Warn("ledger: sync segments at close", "err", err)
	}
	h.err = errors.Join(h.db.Close(), h.segs.close())
	if h.remove && h.dir != "" {
		if err := os.RemoveAll(h.dir); err != nil {
			l.logger.Warn("ledger: cannot remove replaced database; it is removed at the next start", "dir", h.dir, "err", err)
		}
	}
	close(h.done)
}

// Close closes the ledger. It waits until open snapshots are released and reads in
// progress finish, so release every Snapshot first.
func (l *Ledger) Close() error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	h := l.cur
	l.closed = true
	now := l.retireLocked(h, false)
	close(l.changed)
	l.mu.Unlock()
	if now {
		l.closeHandle(h)
	}
	<-h.done
	if h.err != nil {
		return fmt.Errorf("ledger: close badger: %w", h.err)
	}
	return nil
}

// AppliedIndex is the Raft index of the last applied command (0 for a new ledger).
func (l *Ledger) AppliedIndex() uint64 { return l.applied.Load() }

// LastSeq is the highest committed event seq (0 when the ledger has no events).
func (l *Ledger) LastSeq() uint64 { return l.lastSeq.Load() }

// Restores counts the snapshots restored into this ledger since it was opened. A reader
// that follows the log (the views) starts over when it changes: the log it followed was
// replaced. LastSeq going below what such a reader read is no sign of that: an Apply's
// events are visible to new reads a moment before LastSeq moves past them.
func (l *Ledger) Restores() uint64 { return l.restores.Load() }

// Changed returns a channel that is closed after the next Apply that commits events or
// changes routing documents (or the next Restore, or Close). Take the channel before reading, then wait on it:
//
//	ch := l.Changed()
//	evs, _, _ := l.ListEvents(f, from, n)
//	if len(evs) == 0 { <-ch }
func (l *Ledger) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *Ledger) notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Sync makes every applied command durable. Apply does not fsync (the Raft log is the
// durable record and replays what a crash lost); the FSM calls Sync before a Raft
// snapshot, so the stored applied index is never behind the snapshot that lets Raft
// truncate its log.
func (l *Ledger) Sync() error {
	h, err := l.acquire()
	if err != nil {
		return err
	}
	defer l.release(h)
	// Segments first: a pointer that Badger made durable names bytes that are.
	if err := h.segs.syncAll(); err != nil {
		return fmt.Errorf("ledger: sync: %w", err)
	}
	if err := h.db.Sync(); err != nil {
		return fmt.Errorf("ledger: sync: %w", err)
	}
	return nil
}

// badgerLogger sends Badger's log to slog; Badger's info lines are debug here.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Error("badger: " + trimf(f, a)) }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + trimf(f, a))
}
func (b badgerLogger) Infof(f string, a ...any)  { b.l.Debug("badger: " + trimf(f, a)) }
func (b badgerLogger) Debugf(f string, a ...any) {}

func trimf(f string, a []any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }

// segmentWorker seals the segments Apply closed and removes the ones it found empty
// (segments.queue). Before it removes any, it makes every segment and the database
// durable, so a crash cannot bring back a pointer into a removed file, which Apply would
// replay and find missing. It stops when the handle closes; what it did not remove, the
// next Open does.
func (l *Ledger) segmentWorker(h *handle) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-h.unwatch:
				return
			case <-h.segs.queued:
			}
			if err := h.segs.syncAll(); err != nil {
				l.logger.Warn("ledger: sync segments", "err", err)
				continue
			}
			ids := h.segs.takeQueued()
			if len(ids) == 0 {
				continue
			}
			if err := h.db.Sync(); err != nil {
				l.logger.Warn("ledger: sync before removing segments; they are removed at the next start", "err", err)
				continue
			}
			if err := h.segs.retire(ids); err != nil {
				l.logger.Warn("ledger: remove segments", "err", err)
			}
		}
	}()
	return done
}

// valueLogGC reclaims the disk of deleted id runs (and of pruned chunks of a layout 6
// database; chunks are in segments since, segments.go): every vlogGCInterval it has
// Badger rewrite value log files of which at least vlogGCRatio is garbage, one after
// the other until none is left, and stops when the handle closes. Without it the value
// log only grows, whatever retention removes.
func (l *Ledger) valueLogGC(h *handle) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(vlogGCInterval)
		defer t.Stop()
		for {
			select {
			case <-h.unwatch:
				return
			case <-t.C:
			}
			for n := 0; ; n++ {
				select {
				case <-h.unwatch:
					return
				default:
				}
				err := h.db.RunValueLogGC(vlogGCRatio)
				if err != nil {
					if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
						l.logger.Warn("ledger: value log GC", "err", err)
					}
					if n > 0 {
						l.logger.Info("ledger: value log files rewritten", "files", n)
					}
					break
				}
			}
		}
	}()
	return done
}
