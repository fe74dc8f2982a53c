package ledger

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// applyPutNode records (or updates) a control plane node's addresses.
func applyPutNode(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var n storev1.PutNode
	if err := decodePayload(cmd, &n); err != nil {
		return nil, err
	}
	if n.GetId() == "" || len(n.GetId()) > maxKeyPart {
		return fmt.Errorf("%w: node id must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
	}
	return nil, tx.setProto(nodeKey(n.GetId()), &storev1.NodeRecord{
		Id: n.GetId(), ApiAddr: n.GetApiAddr(), RaftAddr: n.GetRaftAddr(), JoinedAt: n.GetJoinedAt(),
	})
}

// applyRemoveNode forgets a node; removing an unknown node is not an error.
func applyRemoveNode(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var n storev1.RemoveNode
	if err := decodePayload(cmd, &n); err != nil {
		return nil, err
	}
	if n.GetId() == "" || len(n.GetId()) > maxKeyPart {
		return fmt.Errorf("%w: node id must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
	}
	if err := tx.txn.Delete(nodeKey(n.GetId())); err != nil {
		return nil, fmt.Errorf("ledger: delete node: %w", err)
	}
	return nil, nil
}

// Node returns a control plane node's record.
func (l *Ledger) Node(id string) (*storev1.NodeRecord, bool, error) {
	rec := &storev1.NodeRecord{}
	ok, err := l.getProto(nodeKey(id), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// Nodes returns every known control plane node, sorted by id.
func (l *Ledger) Nodes() ([]*storev1.NodeRecord, error) {
	var out []*storev1.NodeRecord
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixNode
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rec := &storev1.NodeRecord{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, rec) }); err != nil {
				return fmt.Errorf("ledger: decode node %q: %w", it.Item().Key(), err)
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
