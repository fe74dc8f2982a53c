package outbox

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

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
