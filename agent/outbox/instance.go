package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

var instanceKey = []byte("m/instance")

// Instance returns the outbox's instance id, made (random, fsynced) the first time it
// is asked for. It names this outbox's seq space: the control plane binds an agent's
// enrollment to the first instance it streams from, so an identity copied next to
// another outbox, or an outbox deleted and started afresh, cannot have its seqs taken
// for events already committed.
func (o *Outbox) Instance() (string, error) {
	var id string
	err := o.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(instanceKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { id = string(v); return nil })
	})
	if err != nil {
		return "", fmt.Errorf("outbox: read instance id: %w", err)
	}
	if id != "" {
		return id, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("outbox: make instance id: %w", err)
	}
	id = "ob_" + hex.EncodeToString(b[:])
	if err := o.db.Update(func(txn *badger.Txn) error { return txn.Set(instanceKey, []byte(id)) }); err != nil {
		return "", fmt.Errorf("outbox: store instance id: %w", err)
	}
	return id, nil
}
