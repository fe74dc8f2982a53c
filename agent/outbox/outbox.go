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
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
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

const posPrefix = "p/"

var ackedKey = []byte("m/acked")

// lastKey holds the highest seq ever given out when no record holds it: a repaired
// outbox that lost its newest records must not give their seqs again.
var lastKey = []byte("m/last")

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
