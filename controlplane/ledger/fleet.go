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
//	m/fleetrev               -> u64BE, +1 at every labels change
var (
	prefixAgentLabels = []byte("fleet/labels/")
	keyFleetRevision  = []byte("m/fleetrev")
)

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
	rev, err := getU64(tx.txn.Txn, keyFleetRevision)
	if err != nil {
		return nil, fmt.Errorf("ledger: read fleet revision: %w", err)
	}
	if err := tx.set(keyFleetRevision, u64(rev+1)); err != nil {
		return nil, err
	}
	return &storev1.FleetCommandResult{}, nil
}

// FleetRevision moves whenever a document or an agent's labels change: the agents'
// configurations are chosen again when it does.
func (l *Ledger) FleetRevision() (uint64, error) {
	var docs, fleet uint64
	err := l.view(func(txn *badger.Txn) error {
		var err error
		if docs, err = getU64(txn, keyDocRevision); err != nil {
			return err
		}
		fleet, err = getU64(txn, keyFleetRevision)
		return err
	})
	return docs + fleet, err
}

// LabelsOf returns one agent's labels (nil when it has none).
func (l *Ledger) LabelsOf(agentID string) (map[string]string, error) {
	rec := &storev1.AgentLabels{}
	if _, err := l.getProto(agentLabelsKey(agentID), rec); err != nil {
		return nil, err
	}
	return rec.GetLabels(), nil
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
