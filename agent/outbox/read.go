package outbox

import (
	"errors"
	"fmt"
	"math"

	"github.com/dgraph-io/badger/v4"
)

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
