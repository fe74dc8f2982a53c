package outbox

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// The first outbox format stored one Badger entry per record, under
// 'e' | seq (8 bytes, big endian) | len (4 bytes, big endian). Open converts what such
// an outbox still holds into chunks, so an agent upgraded with events buffered keeps
// them: each step reads up to entryStepRecords entries (or entryStepBytes), writes them
// as chunks and deletes them in one transaction, so a crash mid-way leaves every record
// in exactly one of the two forms and the next Open carries on.
const (
	entryPrefix      = 'e'
	entryKeyLen      = 1 + 8 + 4
	entryStepRecords = 2048
	entryStepBytes   = 4 << 20
)

func parseEntryKey(k []byte) (seq uint64, ok bool) {
	if len(k) != entryKeyLen || k[0] != entryPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:9]), true
}

// migrateEntries converts entries of the first format into chunks; o.acked is loaded.
// Entries at or below the mark (none, unless an Ack's deletions were lost) are deleted.
func (o *Outbox) migrateEntries() error {
	converted := 0
	for {
		var keys [][]byte
		var seqs []uint64
		var recs [][]byte
		size := 0
		err := o.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{entryPrefix}})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < entryStepRecords && size < entryStepBytes; it.Next() {
				item := it.Item()
				seq, ok := parseEntryKey(item.Key())
				if !ok {
					return fmt.Errorf("malformed entry key %x", item.Key())
				}
				keys = append(keys, item.KeyCopy(nil))
				if seq <= o.acked {
					continue
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return fmt.Errorf("entry %d: %w", seq, err)
				}
				seqs, recs = append(seqs, seq), append(recs, v)
				size += len(v)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			if converted > 0 {
				o.log.Info("outbox converted to chunks", "records", converted)
			}
			return nil
		}
		err = o.db.Update(func(txn *badger.Txn) error {
			// One chunk per run of consecutive seqs, split by size as Append does.
			for i := 0; i < len(recs); {
				j := i + 1
				for j < len(recs) && seqs[j] == seqs[j-1]+1 {
					j++
				}
				var rs Records
				for _, r := range recs[i:j] {
					rs.Add(r)
				}
				if err := setChunks(txn, &rs, seqs[i]); err != nil {
					return err
				}
				i = j
			}
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("convert %d entries: %w", len(keys), err)
		}
		converted += len(recs)
	}
}
