package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
)

// batch is an Append's seq range between queueing and publication.
type batch struct {
	first, last uint64
	bytes       uint64
	done        bool
	err         error
	poisoned    bool // its durability is in doubt (value-log fsync failure)
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
