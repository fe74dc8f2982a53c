package ledger

import (
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Alert state (controlplane/alerts): the current state of every alert instance and the
// history of their changes, newest MaxAlertHistory kept.
//
//	as/ u16BE(len) alert key          -> AlertInstance (current)
//	ah/ u64BE(raft index) u32BE(i)    -> AlertInstance (one change)
//	m/alert-history                   -> u64BE changes held under ah/
var (
	prefixAlertState   = []byte("as/")
	prefixAlertHistory = []byte("ah/")
	keyAlertHistoryLen = []byte("m/alert-history")
)

// MaxAlertHistory bounds the alert changes kept (the oldest are dropped).
const MaxAlertHistory = 10000

// maxAlertInstances bounds the instances of one PUT_ALERT_STATES.
const maxAlertInstances = 5000

func alertStateKey(alert, key string) []byte {
	b := append([]byte(nil), prefixAlertState...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(alert)))
	b = append(b, alert...)
	return append(b, key...)
}

func alertHistoryKey(index uint64, i int) []byte {
	b := append([]byte(nil), prefixAlertHistory...)
	b = binary.BigEndian.AppendUint64(b, index)
	return binary.BigEndian.AppendUint32(b, uint32(i))
}

func validAlertRef(alert, key string) bool {
	return alert != "" && len(alert) <= 255 && len(key) <= maxKeyPart
}

// applyPutAlertStates stores each instance as its current state (notified false,
// changed_index this entry) and appends it to the history; forgotten instances are
// removed from the current state.
func applyPutAlertStates(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutAlertStates
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	if len(p.GetInstances())+len(p.GetForget()) > maxAlertInstances {
		return nil, nil
	}
	for _, f := range p.GetForget() {
		if !validAlertRef(f.GetAlert(), f.GetKey()) {
			continue
		}
		k := alertStateKey(f.GetAlert(), f.GetKey())
		tx.charge(1, len(k))
		if err := tx.del(k); err != nil {
			return nil, err
		}
	}
	n, err := getU64(tx.txn.Txn, keyAlertHistoryLen)
	if err != nil {
		return nil, fmt.Errorf("ledger: read alert history length: %w", err)
	}
	added := 0
	for i, in := range p.GetInstances() {
		if !validAlertRef(in.GetAlert(), in.GetKey()) {
			continue
		}
		in.Notified, in.ChangedIndex = false, tx.index
		if err := tx.setProto(alertStateKey(in.GetAlert(), in.GetKey()), in); err != nil {
			return nil, err
		}
		if err := tx.setProto(alertHistoryKey(tx.index, i), in); err != nil {
			return nil, err
		}
		added++
	}
	n += uint64(added)
	if n > MaxAlertHistory {
		// Drop the oldest changes.
		drop := n - MaxAlertHistory
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = prefixAlertHistory, false
		it := tx.txn.NewIterator(opts)
		var old [][]byte
		for it.Rewind(); it.Valid() && uint64(len(old)) < drop; it.Next() {
			old = append(old, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range old {
			tx.charge(1, len(k))
			if err := tx.del(k); err != nil {
				return nil, err
			}
		}
		n -= uint64(len(old))
	}
	return nil, tx.set(keyAlertHistoryLen, u64(n))
}

// applyMarkAlertsNotified sets notified on instances whose current change is the one
// named; a newer change stays un-notified.
func applyMarkAlertsNotified(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.MarkAlertsNotified
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	if len(m.GetRefs()) > maxAlertInstances {
		return nil, nil
	}
	for _, r := range m.GetRefs() {
		if !validAlertRef(r.GetAlert(), r.GetKey()) {
			continue
		}
		k := alertStateKey(r.GetAlert(), r.GetKey())
		in := &storev1.AlertInstance{}
		ok, err := tx.getProto(k, in)
		if err != nil {
			return nil, err
		}
		if !ok || in.GetChangedIndex() != r.GetChangedIndex() || in.GetNotified() {
			continue
		}
		in.Notified = true
		if err := tx.setProto(k, in); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// AlertStates returns the current state of every alert instance, by alert and key.
func (l *Ledger) AlertStates() ([]*storev1.AlertInstance, error) {
	return listProtos(l, prefixAlertState, func() *storev1.AlertInstance { return &storev1.AlertInstance{} })
}

// AlertHistory returns up to limit changes, newest first, of alert (every alert when
// empty).
func (l *Ledger) AlertHistory(alert string, limit int) ([]*storev1.AlertInstance, error) {
	var out []*storev1.AlertInstance
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.Reverse = prefixAlertHistory, true
		it := txn.NewIterator(opts)
		defer it.Close()
		// Reverse iteration starts at the largest key with the prefix.
		seek := append(append([]byte(nil), prefixAlertHistory...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		for it.Seek(seek); it.Valid() && len(out) < limit; it.Next() {
			in := &storev1.AlertInstance{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, in) }); err != nil {
				return fmt.Errorf("ledger: decode alert change %q: %w", it.Item().Key(), err)
			}
			if alert == "" || in.GetAlert() == alert {
				out = append(out, in)
			}
		}
		return nil
	})
	return out, err
}
