package ledger

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/labels"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Fleet state: the labels of agents, by which AgentConfig documents select them.
//
//	fleet/labels/ + agent id -> AgentLabels
var prefixAgentLabels = []byte("fleet/labels/")

func agentLabelsKey(id string) []byte { return cat(prefixAgentLabels, []byte(id)) }

// applySetAgentLabels replaces an enrolled agent's labels.
func applySetAgentLabels(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var s storev1.SetAgentLabels
	if err := decodePayload(cmd, &s); err != nil {
		return nil, err
	}
	if err := labels.Check(s.GetLabels()); err != nil {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%v: %v", ErrInvalidCommand, err)}, nil
	}
	ok, err := tx.getProto(agentKey(s.GetAgentId()), &storev1.AgentRecord{})
	if err != nil {
		return nil, err
	}
	if !ok {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%s: %s", ErrAgentNotFound, s.GetAgentId())}, nil
	}
	at := s.GetAt()
	if at == nil {
		at = timestamppb.New(tx.appendedAt)
	}
	rec := &storev1.AgentLabels{Labels: s.GetLabels(), Actor: s.GetActor(), At: at}
	if err := tx.setProto(agentLabelsKey(s.GetAgentId()), rec); err != nil {
		return nil, err
	}
	tx.newEvents = true // wake Changed waiters: agents' configurations are chosen again
	return &storev1.FleetCommandResult{}, nil
}

// AgentLabels returns every agent's labels, by agent id (agents without labels are
// absent).
func (l *Ledger) AgentLabels() (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixAgentLabels
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rec := &storev1.AgentLabels{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, rec) }); err != nil {
				return fmt.Errorf("ledger: decode agent labels %q: %w", it.Item().Key(), err)
			}
			out[string(it.Item().Key()[len(prefixAgentLabels):])] = rec.GetLabels()
		}
		return nil
	})
	return out, err
}
