// Package outbox is the agent's durable buffer of captured events.
//
// An Outbox is an append-only log of opaque records (marshalled events) kept in a
// Badger database in the agent's data directory. Every record gets a sequence number
// (seq); seqs start at 1, are consecutive, and are never reused, not even after every
// record was acknowledged and the outbox reopened.
//
// The life of a record:
//
//   - A source connector calls Append with a batch of records and its new source
//     Position. Records and positions are written in one Badger transaction, and
//     Append returns only after that transaction was fsynced, so a source change is
//     acknowledged to the source only once it is durable (promise 1 of the design).
//   - The uplink waits on Notify, Reads from its cursor and ships the records.
//   - When the control plane reports the highest seq its Raft quorum committed, the
//     uplink calls Ack, which deletes the records up to that seq and frees quota.
//
// The outbox holds at most Options.QuotaBytes of unacknowledged record bytes. When a
// batch does not fit, Append blocks (back-pressure) and Stats reports Blocked with a
// reason until Ack frees space; nothing is ever dropped.
//
// Durability: Badger runs with SyncWrites, so a commit returns after the value log
// and the write-ahead log were synced (msync). Badger only logs a failed value-log
// sync; the outbox catches that log line and fails the Appends concerned. After any
// write failure the outbox refuses Appends until it is reopened, and readers never
// see a gap in seqs.
//
// Records are stored in chunks (chunk.go): one Badger entry per run of up to 8 KiB
// of an Append's records, keyed by the run's last seq, its record count and its
// record bytes, so Ack learns the freed totals from keys and reads a chunk only when
// the mark falls inside it (Open reads every pending chunk, to check it). An Ack deletes the chunks wholly at or below
// the mark; a chunk that is partly acknowledged stays until its last record is. The
// acknowledged mark is stored under "m/acked" and source positions under "p/<name>".
// An outbox written with one entry per record (the first format) is converted on
// Open (legacy.go).
//
// Open checks the outbox before using it (damage.go): every table file the MANIFEST
// lists, the newest value-log file (which Badger's own open would cut at a corrupt
// entry), and every pending record, read back and decoded. Damage makes Open return a
// *Damage (wrapping ErrDamaged) that names the files and seq ranges; nothing is written
// to a damaged outbox. Repair (repair.go) moves it aside and salvages every intact
// record, with its seq, into a new one. A record that stops reading back while the
// outbox runs makes Appends fail with ErrDamaged until it is repaired.
//
// Badger's options are chosen for a small memory footprint (see badger.go for the
// figures). Its memory is Go heap: draining a backlog of a million events peaks
// near 55 MB of anonymous memory with the default GOGC, near 33 MB with a soft
// memory limit (GOMEMLIMIT or debug.SetMemoryLimit) of 40 MiB, which the agent's
// main should set.
package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/mapadvise"
)

// Errors returned by the outbox. Callers test them with errors.Is; the returned errors
// wrap them with context.
var (
	// ErrClosed is returned by every method (except Stats, Notify and Close) called
	// after Close, and by an Append that was blocked on the quota when Close was called.
	ErrClosed = errors.New("outbox closed")
	// ErrBatchTooLarge is returned at once by an Append whose batch can never be
	// written: more bytes than the whole quota, more than MaxBatchRecords records
	// plus positions (one Badger transaction), or a record over MaxRecordBytes.
	// Split the batch.
	ErrBatchTooLarge = errors.New("outbox batch too large")
	// ErrQuotaFull is returned by an Append whose context ended while it waited for
	// the control plane to acknowledge enough records to make room for its batch. The
	// error also wraps the context's error.
	ErrQuotaFull = errors.New("outbox quota full")
)

// DefaultQuotaBytes is the quota used when Options.QuotaBytes is 0.
const DefaultQuotaBytes = 1 << 30

// Options configure an Outbox.
type Options struct {
	// Dir is the Badger directory; it is created if missing. Only one process may
	// open it at a time.
	Dir string
	// QuotaBytes is the most unacknowledged record bytes (sum of len(record)) the
	// outbox holds before Append blocks; 0 means DefaultQuotaBytes (1 GiB). Disk use
	// is higher: about 1.2 times the pending bytes (keys, headers, the LSM tree),
	// plus acknowledged data until compaction and value-log GC reclaim it (a few
	// 64 MiB value-log files). Leave room for twice the quota.
	QuotaBytes int64
	// Logger receives the outbox's and Badger's logs; nil means slog.Default().
	Logger *slog.Logger
	// MinFreeBytes is the free disk space Append keeps on the outbox's file system:
	// below it plus twice the batch, Append blocks as it does on a full quota, because
	// Badger writes through mmap and a disk that fills up mid-write kills the process.
	// 0 means DefaultMinFreeBytes; negative disables the check.
	MinFreeBytes int64
	// FreeSpace reports the free bytes of the outbox's file system; nil means statfs on
	// Dir. Tests set it to inject a full disk.
	FreeSpace func() (uint64, error)
}

// DefaultMinFreeBytes is the free disk space kept by default.
const DefaultMinFreeBytes = 256 << 20

// Position is a source connector's position (e.g. a change-data-capture LSN),
// committed in the same Badger transaction as the records read up to it.
type Position struct{ Name, Value string }

// Entry is a record with its seq.
type Entry struct {
	Seq  uint64
	Data []byte
}

// Stats is a snapshot of the outbox's state.
type Stats struct {
	// FirstSeq is the oldest unacknowledged seq, 0 when nothing is pending.
	FirstSeq uint64
	// LastSeq is the newest committed seq (readable by Read), 0 if nothing was
	// ever appended. It stays put when everything is acknowledged. After a Repair
	// that lost the newest records it is the highest seq the damaged outbox gave.
	LastSeq uint64
	// AckedSeq is the highest acknowledged seq.
	AckedSeq uint64
	// PendingEvents and PendingBytes count the committed, unacknowledged records
	// and the sum of their lengths.
	PendingEvents uint64
	PendingBytes  uint64
	QuotaBytes    uint64
	// Blocked is true while at least one Append waits for quota; BlockedReason
	// says why in words and BlockedSince when the oldest waiter started waiting.
	// After a write failure Blocked stays true (with the error as the reason, and
	// a zero BlockedSince) until the outbox is reopened.
	Blocked       bool
	BlockedReason string
	BlockedSince  time.Time
}

// Outbox is a durable, seq-numbered buffer of records. It is safe for concurrent use.
type Outbox struct {
	db       *badger.DB
	log      *slog.Logger
	quota    uint64
	minFree  int64
	free     func() (uint64, error)
	ackChunk int

	// commitMu orders seq assignment with the hand-off of transactions to Badger's
	// write goroutine, so Badger writes batches in seq order. It is held only while
	// a transaction is built and queued, not while it is fsynced, so concurrent
	// Appends share Badger's group commits. Lock order: commitMu, then mu.
	commitMu sync.Mutex
	nextSeq  uint64 // guarded by commitMu

	// ackMu serialises Acks.
	ackMu sync.Mutex

	// capMu guards capture: while Open verifies the records, Badger's value read errors
	// (which it logs instead of returning) are collected there.
	capMu   sync.Mutex
	capture *readErrors

	mu            sync.Mutex
	closed        bool
	failed        error         // sticky write failure; no Append succeeds after it
	stalled       bool          // a batch failed: nothing after it is published until reopen
	acked         uint64        // highest acknowledged seq
	readable      uint64        // highest seq such that all seqs in (acked, readable] are committed
	pendingEvents uint64        // records in (acked, readable]
	pendingBytes  uint64        // their bytes
	reserved      uint64        // quota bytes held by Appends in flight
	inflight      []*batch      // queued or committed batches not yet published, in seq order
	notifyCh      chan struct{} // closed when readable advances
	spaceCh       chan struct{} // closed when quota may have been freed or the waiter queue changed
	waitq         []*waiter     // Appends waiting for quota, FIFO
	blockedSince  time.Time

	closeCh chan struct{} // closed by Close
	ops     sync.WaitGroup
	gcKick  chan struct{}
	gcDone  chan struct{}
	watched <-chan struct{} // closed once mapadvise.Watch has stopped (after closeCh)
	freed   uint64          // bytes acknowledged since the last GC kick; guarded by mu
}

// batch is an Append's seq range between queueing and publication.
type batch struct {
	first, last uint64
	bytes       uint64
	done        bool
	err         error
	poisoned    bool // its durability is in doubt (value-log fsync failure)
}

type waiter struct{ need uint64 }

const posPrefix = "p/"

var ackedKey = []byte("m/acked")

// lastKey holds the highest seq ever given out when no record holds it: a repaired
// outbox that lost its newest records must not give their seqs again.
var lastKey = []byte("m/last")

// repairingSuffix names the directory Repair builds the new outbox in.
const repairingSuffix = ".repairing"

// Open opens (creating if needed) the outbox in opts.Dir. It checks the files and reads
// back every pending record, and recovers the next seq, the acknowledged mark and the
// pending count and bytes. A damaged outbox is not opened: the error is a *Damage
// (errors.Is(err, ErrDamaged)) saying what is damaged; Repair salvages it.
func Open(opts Options) (*Outbox, error) {
	if opts.Dir == "" {
		return nil, errors.New("outbox: open: Options.Dir is empty")
	}
	if opts.QuotaBytes < 0 {
		return nil, fmt.Errorf("outbox: open: negative QuotaBytes %d", opts.QuotaBytes)
	}
	quota := uint64(opts.QuotaBytes)
	if quota == 0 {
		quota = DefaultQuotaBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	o := &Outbox{
		log:      log.With("component", "outbox"),
		quota:    quota,
		minFree:  opts.MinFreeBytes,
		free:     opts.FreeSpace,
		notifyCh: make(chan struct{}),
		spaceCh:  make(chan struct{}),
		closeCh:  make(chan struct{}),
		gcKick:   make(chan struct{}, 1),
		gcDone:   make(chan struct{}),
	}
	if o.minFree == 0 {
		o.minFree = DefaultMinFreeBytes
	}
	if o.free == nil {
		dir := opts.Dir
		o.free = func() (uint64, error) { return freeBytes(dir) }
	}
	if work := filepath.Clean(opts.Dir) + repairingSuffix; exists(work) {
		return nil, &Damage{Dir: opts.Dir, Problems: []string{fmt.Sprintf(
			"a repair was interrupted (%s exists): run the repair again", filepath.Base(work))}}
	}
	bopts := o.badgerOptions(opts.Dir, log.With("component", "outbox.badger"))
	unlock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	// Badger opens table files on its own goroutines, where a damaged one panics.
	problems := checkTables(opts.Dir, bopts)
	// Badger cuts the newest value log at an entry that does not check.
	if p := checkNewestValueLog(opts.Dir); p != "" {
		problems = append(problems, p)
	}
	unlock()
	if len(problems) > 0 {
		return nil, &Damage{Dir: opts.Dir, Problems: problems}
	}
	var db *badger.DB
	err = catch(func() error {
		var err error
		db, err = badger.Open(bopts)
		return err
	})
	if err != nil {
		if openErrIsDamage(err) {
			return nil, &Damage{Dir: opts.Dir, Problems: []string{fmt.Sprintf("badger cannot open it: %v", err)}}
		}
		return nil, fmt.Errorf("outbox: open badger in %s: %w", opts.Dir, err)
	}
	o.db = db
	// Deletes plus the mark plus Badger's commit marker, below its limit.
	o.ackChunk = int(min(ackChunk, db.MaxBatchCount()-3))
	if db.MaxBatchCount() != maxTxnEntries {
		// Another platform or Badger version: Append still reports ErrBatchTooLarge
		// from Badger's own check, but MaxBatchRecords is not exact.
		o.log.Warn("badger transaction limit differs from outbox.MaxBatchRecords",
			"badger_max_entries", db.MaxBatchCount(), "assumed", maxTxnEntries)
	}
	if err := o.recover(opts.Dir); err != nil {
		if cerr := db.Close(); cerr != nil {
			o.log.Warn("close badger after failed open", "err", cerr)
		}
		return nil, err
	}
	go o.gcLoop()
	o.watched = mapadvise.Watch(opts.Dir, o.closeCh, o.log)
	o.log.Debug("outbox opened", "dir", opts.Dir, "acked_seq", o.acked, "last_seq", o.readable,
		"pending_events", o.pendingEvents, "pending_bytes", o.pendingBytes, "quota_bytes", quota)
	return o, nil
}

// recover loads the acked mark, converts an outbox of an earlier format (see
// migrateEntries) and reads every pending chunk and position, checking that each
// record decodes; it returns a *Damage naming what cannot be read.
func (o *Outbox) recover(dir string) error {
	var floor uint64
	err := o.db.View(func(txn *badger.Txn) error {
		for _, mk := range []struct {
			key []byte
			to  *uint64
		}{{ackedKey, &o.acked}, {lastKey, &floor}} {
			item, err := txn.Get(mk.key)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				continue
			case err != nil:
				return fmt.Errorf("read %s: %w", mk.key, err)
			}
			err = item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%s has %d bytes, want 8", mk.key, len(v))
				}
				*mk.to = binary.BigEndian.Uint64(v)
				return nil
			})
			if err != nil {
				return fmt.Errorf("read %s: %w", mk.key, err)
			}
		}
		return nil
	})
	if err != nil {
		return &Damage{Dir: dir, Problems: []string{err.Error()}}
	}
	if err := o.migrateEntries(); err != nil {
		return fmt.Errorf("outbox: convert entries of the earlier format: %w", err)
	}
	dmg := &Damage{Dir: dir}
	rerr := &readErrors{}
	o.setCapture(rerr)
	defer o.setCapture(nil)
	var chunkProblems []string
	err = o.db.View(func(txn *badger.Txn) error {
		last := o.acked
		err := eachChunk(txn, o.acked+1, func(m chunkMeta, item *badger.Item) (bool, error) {
			lo := max(o.acked, m.first-1) // the first chunk may be partly acknowledged
			if lo == m.first-1 && m.first != last+1 {
				// After a write failure that Badger partially recovered, or a repair
				// that lost records; readers skip the gap.
				o.log.Warn("outbox has a gap in seqs", "after", last, "next", m.first)
			}
			var n uint64
			err := item.Value(func(v []byte) error {
				var err error
				n, err = chunkBytesIn(m, v, lo, m.last)
				return err
			})
			last = m.last
			if err != nil {
				dmg.Unreadable = addRange(dmg.Unreadable, SeqRange{lo + 1, m.last})
				dmg.UnreadableBytes += uint64(m.bytes)
				if len(rerr.pending) == 0 {
					chunkProblems = append(chunkProblems, fmt.Sprintf("records of seqs %d-%d: %v", m.first, m.last, err))
				}
				rerr.chunkLost(m)
				return true, nil
			}
			dmg.IntactEvents += m.last - lo
			o.pendingEvents += m.last - lo
			o.pendingBytes += n
			return true, nil
		})
		if err != nil {
			return err
		}
		o.readable = max(last, floor)
		return eachPosition(txn, func(name string, item *badger.Item) error {
			err := item.Value(func(v []byte) error {
				if len(rerr.pending) > 0 {
					rerr.pending = rerr.pending[:0]
					return errors.New("value lost")
				}
				return nil
			})
			if err != nil {
				chunkProblems = append(chunkProblems, fmt.Sprintf("source position %q: %v", name, err))
			}
			return nil
		})
	})
	if err != nil {
		dmg.Problems = append(dmg.Problems, fmt.Sprintf("reading the index: %v", err))
	}
	dmg.Problems = append(dmg.Problems, rerr.problems(dir)...)
	if len(chunkProblems) > 5 {
		chunkProblems = append(chunkProblems[:5], fmt.Sprintf("and %d more", len(chunkProblems)-5))
	}
	dmg.Problems = append(dmg.Problems, chunkProblems...)
	if len(dmg.Problems) > 0 {
		return dmg
	}
	o.nextSeq = o.readable + 1
	return nil
}

// eachPosition calls fn with each source position's name and item.
func eachPosition(txn *badger.Txn, fn func(name string, item *badger.Item) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(posPrefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := fn(string(it.Item().Key()[len(posPrefix):]), it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// setCapture makes Badger's value read errors go to c (nil: to the log).
func (o *Outbox) setCapture(c *readErrors) {
	o.capMu.Lock()
	o.capture = c
	o.capMu.Unlock()
}

// badgerError is given Badger's error log lines; it reports whether it took the line.
func (o *Outbox) badgerError(msg string) bool {
	o.capMu.Lock()
	defer o.capMu.Unlock()
	return o.capture != nil && o.capture.capture(msg)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// openErrIsDamage tells damage from the other reasons Badger fails to open: another
// process holds the directory, permissions.
func openErrIsDamage(err error) bool {
	msg := err.Error()
	return !errors.Is(err, os.ErrPermission) && !strings.Contains(msg, "Another process is using this Badger database") &&
		!strings.Contains(msg, "Cannot acquire directory lock")
}

// Append writes recs with consecutive seqs first..last, and the positions, in one
// Badger transaction and returns after it was fsynced. With no records it only
// commits the positions and returns 0, 0. Appends carrying the same position name
// must not run concurrently (their order would be undefined).
//
// When the quota cannot hold the batch, Append blocks (Stats reports Blocked) until
// Ack frees enough space, the outbox is closed (ErrClosed) or ctx is done (an error
// wrapping ErrQuotaFull and ctx.Err()). Waiting Appends are served first come,
// first served. A batch that can never be written returns ErrBatchTooLarge at once:
// more than MaxBatchRecords records plus positions, a record over MaxRecordBytes, or
// more bytes than the whole quota.
//
// Append copies the records; AppendRecords writes records already laid out for the
// outbox without copying them.
func (o *Outbox) Append(ctx context.Context, recs [][]byte, pos ...Position) (first, last uint64, err error) {
	if err := o.checkBatch(len(recs), pos, func(i int) int { return len(recs[i]) }); err != nil {
		return 0, 0, err
	}
	var rs Records
	size := 0
	for _, r := range recs {
		size += len(r) + protowire.SizeVarint(uint64(len(r)))
	}
	rs.Grow(size)
	for _, r := range recs {
		rs.Add(r)
	}
	return o.AppendRecords(ctx, &rs, pos...)
}

// checkBatch returns ErrBatchTooLarge for a batch that can never be written.
func (o *Outbox) checkBatch(n int, pos []Position, length func(i int) int) error {
	if n+len(pos) > MaxBatchRecords {
		return fmt.Errorf("outbox: append: %d records and %d positions exceed the %d entries of one transaction: %w",
			n, len(pos), MaxBatchRecords, ErrBatchTooLarge)
	}
	var size uint64
	for i := range n {
		l := length(i)
		if l > MaxRecordBytes {
			return fmt.Errorf("outbox: append: record %d has %d bytes, more than %d: %w",
				i, l, MaxRecordBytes, ErrBatchTooLarge)
		}
		size += uint64(l)
	}
	if size > o.quota {
		return fmt.Errorf("outbox: append: batch of %d bytes exceeds the %d-byte quota: %w",
			size, o.quota, ErrBatchTooLarge)
	}
	return nil
}

// AppendRecords is Append for records already laid out as the outbox stores them: it
// writes them without copying. rs must not change until it returns.
func (o *Outbox) AppendRecords(ctx context.Context, rs *Records, pos ...Position) (first, last uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("outbox: append: %w", err)
	}
	if err := o.checkBatch(rs.Len(), pos, func(i int) int { return rs.end(i) - rs.offs[i] }); err != nil {
		return 0, 0, err
	}
	size := rs.bytes
	if err := o.enter(); err != nil {
		return 0, 0, fmt.Errorf("outbox: append: %w", err)
	}
	defer o.ops.Done()
	if rs.Len() == 0 {
		if len(pos) == 0 {
			return 0, 0, nil
		}
		return 0, 0, o.commitPositions(pos)
	}
	if err := o.reserve(ctx, size); err != nil {
		return 0, 0, err
	}
	b, done, err := o.queue(rs, size, pos)
	if err != nil {
		o.mu.Lock()
		o.reserved -= size
		o.wakeLocked()
		o.mu.Unlock()
		return 0, 0, err
	}
	// The transaction is in Badger's hands: wait for its fsync even if ctx ends, so
	// the answer is truthful.
	cerr := <-done
	o.mu.Lock()
	defer o.mu.Unlock()
	b.done, b.err = true, cerr
	if cerr != nil && o.failed == nil {
		o.failed = fmt.Errorf("outbox: write of seqs %d..%d failed, reopen the outbox: %w", b.first, b.last, cerr)
		o.log.Error("outbox write failed; appends refused until reopen", "first", b.first, "last", b.last, "err", cerr)
	}
	o.publishLocked()
	switch {
	case cerr != nil:
		return 0, 0, fmt.Errorf("outbox: append seqs %d..%d: %w", b.first, b.last, cerr)
	case b.poisoned:
		return 0, 0, o.failed
	}
	// Durable. (If an earlier batch failed, this one becomes readable on reopen.)
	return b.first, b.last, nil
}

func (o *Outbox) enter() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	o.ops.Add(1)
	return nil
}

// reserve takes size bytes of quota, waiting in FIFO order for acks if needed.
func (o *Outbox) reserve(ctx context.Context, size uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed != nil {
		return o.failed
	}
	if len(o.waitq) == 0 && o.fitsLocked(size) {
		o.reserved += size
		return nil
	}
	w := &waiter{need: size}
	o.waitq = append(o.waitq, w)
	start := time.Now()
	if len(o.waitq) == 1 {
		o.blockedSince = start
		o.log.Warn("outbox full; producers blocked until the control plane acknowledges",
			"pending_bytes", o.pendingBytes+o.reserved, "quota_bytes", o.quota, "batch_bytes", size)
	}
	for {
		switch {
		case o.closed:
			o.dequeueLocked(w)
			return fmt.Errorf("outbox: append: %w", ErrClosed)
		case o.failed != nil:
			o.dequeueLocked(w)
			return o.failed
		case o.waitq[0] == w && o.fitsLocked(size):
			o.dequeueLocked(w)
			o.reserved += size
			return nil
		}
		ch := o.spaceCh
		o.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(time.Second): // free disk space comes back without an ack
		case <-o.closeCh:
		case <-ctx.Done():
			o.mu.Lock()
			o.dequeueLocked(w)
			if o.quotaFitsLocked(size) {
				return fmt.Errorf("outbox: append: waited %s for free disk space (keeping %d MiB free): %w: %w",
					time.Since(start).Round(time.Millisecond), o.minFree>>20, ErrQuotaFull, ctx.Err())
			}
			return fmt.Errorf("outbox: append: waited %s for %d bytes of quota (%d of %d bytes pending): %w: %w",
				time.Since(start).Round(time.Millisecond), size, o.pendingBytes+o.reserved, o.quota,
				ErrQuotaFull, ctx.Err())
		}
		o.mu.Lock()
	}
}

func (o *Outbox) fitsLocked(size uint64) bool {
	return o.quotaFitsLocked(size) && o.diskFits(size)
}

func (o *Outbox) quotaFitsLocked(size uint64) bool {
	return o.pendingBytes+o.reserved+size <= o.quota
}

// diskFits reports whether the file system keeps MinFreeBytes after a batch of size
// bytes (counted twice: value log plus LSM and WAL). An error reading it lets the
// append through: the quota still bounds the outbox.
func (o *Outbox) diskFits(size uint64) bool {
	if o.minFree < 0 {
		return true
	}
	free, err := o.free()
	if err != nil {
		return true
	}
	return free >= uint64(o.minFree)+2*size
}

// dequeueLocked removes w from the wait queue and wakes the others, since the head
// may have changed.
func (o *Outbox) dequeueLocked(w *waiter) {
	for i, x := range o.waitq {
		if x == w {
			o.waitq = append(o.waitq[:i], o.waitq[i+1:]...)
			break
		}
	}
	if len(o.waitq) == 0 && !o.blockedSince.IsZero() {
		o.log.Info("outbox no longer blocked", "blocked_for", time.Since(o.blockedSince).Round(time.Millisecond))
		o.blockedSince = time.Time{}
	}
	o.wakeLocked()
}

// wakeLocked wakes every waiting Append so the head re-checks the quota.
func (o *Outbox) wakeLocked() {
	if len(o.waitq) == 0 {
		return
	}
	close(o.spaceCh)
	o.spaceCh = make(chan struct{})
}

// queue assigns seqs, builds the transaction and hands it to Badger, in seq order.
func (o *Outbox) queue(rs *Records, size uint64, pos []Position) (*batch, <-chan error, error) {
	o.commitMu.Lock()
	defer o.commitMu.Unlock()
	o.mu.Lock()
	failed := o.failed
	o.mu.Unlock()
	if failed != nil {
		return nil, nil, failed
	}
	first := o.nextSeq
	last := first + uint64(rs.Len()) - 1
	txn := o.db.NewTransaction(true)
	if err := setChunks(txn, rs, first); err != nil {
		txn.Discard()
		return nil, nil, o.setErr(err, rs.Len(), size)
	}
	for _, p := range pos {
		if err := txn.Set([]byte(posPrefix+p.Name), []byte(p.Value)); err != nil {
			txn.Discard()
			return nil, nil, o.setErr(err, rs.Len(), size)
		}
	}
	b := &batch{first: first, last: last, bytes: size}
	o.mu.Lock()
	o.inflight = append(o.inflight, b)
	o.mu.Unlock()
	o.nextSeq = last + 1
	done := make(chan error, 1)
	txn.CommitWith(func(err error) { done <- err })
	return b, done, nil
}

func (o *Outbox) setErr(err error, n int, size uint64) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("outbox: append: batch of %d records, %d bytes does not fit one transaction: %w",
			n, size, ErrBatchTooLarge)
	}
	return fmt.Errorf("outbox: append: %w", err)
}

// publishLocked advances readable over the completed prefix of inflight. It never
// publishes past a failed batch, so readers never see a gap; batches after it are
// durable and become readable on reopen.
func (o *Outbox) publishLocked() {
	advanced := false
	for len(o.inflight) > 0 && o.inflight[0].done {
		b := o.inflight[0]
		o.reserved -= b.bytes
		if b.err != nil || b.poisoned {
			o.stalled = true
		}
		if !o.stalled {
			o.pendingBytes += b.bytes
			o.pendingEvents += b.last - b.first + 1
			o.readable = b.last
			advanced = true
		}
		o.inflight[0] = nil
		o.inflight = o.inflight[1:]
	}
	if len(o.inflight) == 0 {
		o.inflight = nil
	}
	if advanced && !o.closed {
		close(o.notifyCh)
		o.notifyCh = make(chan struct{})
	}
	if o.failed != nil {
		o.wakeLocked()
	}
}

func (o *Outbox) commitPositions(pos []Position) error {
	o.commitMu.Lock()
	txn := o.db.NewTransaction(true)
	for _, p := range pos {
		if err := txn.Set([]byte(posPrefix+p.Name), []byte(p.Value)); err != nil {
			txn.Discard()
			o.commitMu.Unlock()
			return fmt.Errorf("outbox: append positions: %w", err)
		}
	}
	done := make(chan error, 1)
	txn.CommitWith(func(err error) { done <- err })
	o.commitMu.Unlock()
	if err := <-done; err != nil {
		return fmt.Errorf("outbox: append positions: %w", err)
	}
	return nil
}

// Read returns up to maxCount entries with seq >= from, in seq order, stopping before
// the entry that would take the total past maxBytes; it returns at least one entry
// if any exists, however big. maxCount or maxBytes <= 0 means no limit. Entries at or
// below the acknowledged mark are gone, so reading starts after it at the earliest.
// The returned Data slices are the caller's.
func (o *Outbox) Read(from uint64, maxCount, maxBytes int) ([]Entry, error) {
	var out []Entry
	err := o.read(from, maxCount, maxBytes, func(v []byte, recs []recSpan) error {
		// Copy the records' span of the chunk's value once.
		lo, hi := recs[0].off, recs[len(recs)-1].end
		span := append([]byte(nil), v[lo:hi]...)
		if out == nil {
			out = make([]Entry, 0, min(max(maxCount, len(recs)), 1024))
		}
		for _, r := range recs {
			out = append(out, Entry{Seq: r.seq, Data: span[r.off-lo : r.end-lo : r.end-lo]})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadFunc is Read without copies: it calls fn with each entry instead of returning
// them. rec is valid only during the call (it may point into the outbox's memory-mapped
// files): fn copies what it keeps. An error from fn stops the read and is returned. It
// returns the number of entries passed to fn and the last one's seq.
func (o *Outbox) ReadFunc(from uint64, maxCount, maxBytes int, fn func(seq uint64, rec []byte) error) (n int, last uint64, err error) {
	err = o.read(from, maxCount, maxBytes, func(v []byte, recs []recSpan) error {
		for _, r := range recs {
			if err := fn(r.seq, v[r.off:r.end:r.end]); err != nil {
				return err
			}
			n, last = n+1, r.seq
		}
		return nil
	})
	return n, last, err
}

// recSpan is a record's seq and place in its chunk's value.
type recSpan struct {
	seq      uint64
	off, end int
}

// read finds the entries Read returns and calls visit for each chunk holding some of
// them, with the chunk's value (valid during the call) and the records' spans in it.
func (o *Outbox) read(from uint64, maxCount, maxBytes int, visit func(v []byte, recs []recSpan) error) error {
	if err := o.enter(); err != nil {
		return fmt.Errorf("outbox: read: %w", err)
	}
	defer o.ops.Done()
	o.mu.Lock()
	hi, acked := o.readable, o.acked
	o.mu.Unlock()
	if from <= acked {
		from = acked + 1
	}
	if from > hi {
		return nil
	}
	if maxCount <= 0 || uint64(maxCount) > hi-from+1 {
		maxCount = int(min(hi-from+1, math.MaxInt32))
	}
	err := o.db.View(func(txn *badger.Txn) error {
		count, total, prev := 0, 0, uint64(0)
		var recs []recSpan
		return eachChunk(txn, from, func(m chunkMeta, item *badger.Item) (bool, error) {
			if m.first > hi {
				return false, nil
			}
			if count > 0 && m.first != prev+1 {
				// A gap (records a repair could not salvage): stop before it, so a
				// read returns consecutive seqs; the next read starts past it.
				return false, nil
			}
			full := false
			err := item.Value(func(v []byte) error {
				recs = recs[:0]
				werr := walkChunk(m, v, func(seq uint64, off int, rec []byte) bool {
					if seq < from {
						return true
					}
					if seq > hi || count >= maxCount || (maxBytes > 0 && count > 0 && total+len(rec) > maxBytes) {
						full = true
						return false
					}
					recs = append(recs, recSpan{seq, off, off + len(rec)})
					count++
					total += len(rec)
					prev = seq
					return true
				})
				if werr != nil || len(recs) == 0 {
					return werr
				}
				return visit(v, recs)
			})
			if err != nil {
				return false, fmt.Errorf("chunk of seqs %d..%d: %w", m.first, m.last, err)
			}
			return !full, nil
		})
	})
	if err != nil {
		err = fmt.Errorf("outbox: read from %d: %w", from, err)
		if errors.Is(err, errChunkCorrupt) {
			o.damaged(err)
		}
		return err
	}
	return nil
}

// damaged puts the outbox in the failed state after a record that Open verified could
// no longer be read: appends are refused, since what is written may not read back.
func (o *Outbox) damaged(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed == nil {
		o.failed = fmt.Errorf("%w while running, appends refused: %w; stop the agent and repair the outbox", ErrDamaged, err)
		o.log.Error("outbox damaged; appends refused", "err", err)
		o.wakeLocked()
	}
}

// ackChunk is the most deletions per Ack transaction (plus the mark), so the quota
// is freed in steps. Open lowers it to fit Badger's entry limit if needed.
const ackChunk = 4096

// Ack deletes the entries with seq <= upTo, persists the acknowledged mark, frees
// their quota and wakes blocked Appends. upTo <= the current mark is a no-op; upTo
// beyond the last committed seq is clamped to it. The deletion is committed in
// chunks, each with its own mark, so after a crash the mark and the remaining entries
// agree; re-sending entries whose Ack was lost is harmless (the control plane dedups).
func (o *Outbox) Ack(upTo uint64) error {
	if err := o.enter(); err != nil {
		return fmt.Errorf("outbox: ack: %w", err)
	}
	defer o.ops.Done()
	o.ackMu.Lock()
	defer o.ackMu.Unlock()
	o.mu.Lock()
	acked, hi := o.acked, o.readable
	o.mu.Unlock()
	if upTo <= acked {
		return nil
	}
	if upTo > hi {
		o.log.Warn("ack beyond the last committed seq; clamped", "ack", upTo, "last_seq", hi)
		upTo = hi
		if upTo <= acked {
			return nil
		}
	}
	keys := make([][]byte, 0, min(o.ackChunk, 64))
	for acked < upTo {
		keys = keys[:0]
		var bytes, events uint64
		mark := upTo
		err := o.db.View(func(txn *badger.Txn) error {
			return eachChunk(txn, acked+1, func(m chunkMeta, item *badger.Item) (bool, error) {
				if m.first > upTo {
					return false, nil
				}
				if len(keys) == o.ackChunk {
					mark = m.first - 1
					return false, nil
				}
				// A chunk may be partly acknowledged before or after this Ack.
				lo, hi := max(acked, m.first-1), min(upTo, m.last)
				n, err := bytesIn(item, m, lo, hi)
				if err != nil {
					return false, err
				}
				events += hi - lo
				bytes += n
				if m.last <= upTo {
					keys = append(keys, item.KeyCopy(nil))
				}
				return true, nil
			})
		})
		if err != nil {
			return fmt.Errorf("outbox: ack %d: scan: %w", upTo, err)
		}
		err = o.db.Update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return txn.Set(ackedKey, binary.BigEndian.AppendUint64(nil, mark))
		})
		if err != nil {
			return fmt.Errorf("outbox: ack %d: delete up to %d: %w", upTo, mark, err)
		}
		o.mu.Lock()
		o.acked = mark
		o.pendingEvents -= events
		o.pendingBytes -= bytes
		o.freed += bytes
		kick := o.freed >= gcKickBytes
		if kick {
			o.freed = 0
		}
		o.wakeLocked()
		o.mu.Unlock()
		if kick {
			select {
			case o.gcKick <- struct{}{}:
			default:
			}
		}
		acked = mark
	}
	return nil
}

// Notify returns a channel that is closed when entries are committed after the call,
// or when the outbox is closed. Call it again after each wake-up.
func (o *Outbox) Notify() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notifyCh
}

// Position returns the value of the named source position and whether it exists.
func (o *Outbox) Position(name string) (string, bool, error) {
	if err := o.enter(); err != nil {
		return "", false, fmt.Errorf("outbox: position %q: %w", name, err)
	}
	defer o.ops.Done()
	var val string
	found := false
	err := o.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(posPrefix + name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error { val = string(v); return nil })
	})
	if err != nil {
		return "", false, fmt.Errorf("outbox: position %q: %w", name, err)
	}
	return val, found, nil
}

// Stats returns a snapshot of the outbox's counters and back-pressure state.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Stats{
		LastSeq:       o.readable,
		AckedSeq:      o.acked,
		PendingEvents: o.pendingEvents,
		PendingBytes:  o.pendingBytes,
		QuotaBytes:    o.quota,
	}
	if o.pendingEvents > 0 { // not readable > acked: a repaired outbox may end in lost seqs
		s.FirstSeq = o.acked + 1
	}
	if len(o.waitq) > 0 {
		s.Blocked = true
		s.BlockedSince = o.blockedSince
		s.BlockedReason = fmt.Sprintf("outbox full: %d of %d bytes pending; next batch needs %d bytes; waiting for the control plane to acknowledge",
			o.pendingBytes+o.reserved, o.quota, o.waitq[0].need)
		if o.quotaFitsLocked(o.waitq[0].need) {
			free, _ := o.free()
			s.BlockedReason = fmt.Sprintf("disk full: %d MiB free, the outbox keeps %d MiB free; free disk space (or lower the quota)",
				free>>20, o.minFree>>20)
		}
	}
	if o.failed != nil {
		s.Blocked = true
		s.BlockedReason = o.failed.Error()
	}
	return s
}

// Close wakes blocked Appends (they return ErrClosed), waits for operations in
// progress, stops the background garbage collection and closes Badger. Calling it
// again returns nil.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	close(o.closeCh)
	close(o.notifyCh) // left closed: Notify after Close returns a closed channel
	o.wakeLocked()
	o.mu.Unlock()
	<-o.gcDone
	<-o.watched
	o.ops.Wait()
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("outbox: close badger: %w", err)
	}
	return nil
}
