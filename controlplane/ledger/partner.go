package ledger

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Partner API state: keys (only hashes of their secrets), the daily quota each node
// leased, and the traffic nodes reported.
//
//	pk/ key id                          -> PartnerKey
//	pq/ u16BE(len) partner day          -> QuotaRecord
//	pu/ u16BE(len) partner day          -> PartnerUsageRecord (calls of the day)
//	pr/ partner                         -> PartnerUsageRecord (recent refusals only)
var (
	prefixPartnerKey     = []byte("pk/")
	prefixPartnerQuota   = []byte("pq/")
	prefixPartnerUsage   = []byte("pu/")
	prefixPartnerRefusal = []byte("pr/")
)

// MaxRecentRefusals bounds the audit trail kept per partner (newest kept).
const MaxRecentRefusals = 50

// maxUsageEntries bounds the partners and call counters of one RECORD_PARTNER_USAGE.
const maxUsageEntries = 10000

func partnerDayKey(prefix []byte, partner, day string) []byte {
	b := append([]byte(nil), prefix...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(partner)))
	b = append(b, partner...)
	return append(b, day...)
}

func partnerKeyKey(id string) []byte { return cat(prefixPartnerKey, []byte(id)) }

func checkPartnerName(partner string) error {
	if partner == "" || len(partner) > 255 {
		return fmt.Errorf("%w: partner name must be 1 to 255 bytes", ErrInvalidCommand)
	}
	return nil
}

// applyPutPartnerKey stores a new key; an existing id is refused.
func applyPutPartnerKey(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutPartnerKey
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	if why, err := putNewPartnerKey(tx, p.GetKey()); err != nil || why != "" {
		return &storev1.PartnerKeyResult{Error: why}, err
	}
	return &storev1.PartnerKeyResult{}, nil
}

func putNewPartnerKey(tx *applyTxn, k *storev1.PartnerKey) (string, error) {
	if k.GetId() == "" || len(k.GetId()) > 128 {
		return fmt.Sprintf("%v: key id must be 1 to 128 bytes", ErrInvalidCommand), nil
	}
	if err := checkPartnerName(k.GetPartner()); err != nil {
		return err.Error(), nil
	}
	if len(k.GetSecretSha256()) != 32 {
		return fmt.Sprintf("%v: secret hash must be 32 bytes", ErrInvalidCommand), nil
	}
	if _, ok, err := getValue(tx.txn.Txn, partnerKeyKey(k.GetId())); err != nil {
		return "", fmt.Errorf("ledger: read partner key: %w", err)
	} else if ok {
		return fmt.Sprintf("partner key id %s already exists", k.GetId()), nil
	}
	if k.GetCreatedAt() == nil {
		k.CreatedAt = timestamppb.New(tx.appendedAt)
	}
	return "", tx.setProto(partnerKeyKey(k.GetId()), k)
}

// applyRotatePartnerKey stores a new key and, in the same entry, moves the expiry of the
// partner's other live keys to old_expires_at when that is earlier: both take effect at
// one committed index on every node.
func applyRotatePartnerKey(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var r storev1.RotatePartnerKey
	if err := decodePayload(cmd, &r); err != nil {
		return nil, err
	}
	if err := checkPartnerName(r.GetKey().GetPartner()); err != nil {
		return &storev1.PartnerKeyResult{Error: err.Error()}, nil
	}
	old, err := partnerKeysTxn(tx.txn.Txn, r.GetKey().GetPartner())
	if err != nil {
		return nil, err
	}
	if why, err := putNewPartnerKey(tx, r.GetKey()); err != nil || why != "" {
		return &storev1.PartnerKeyResult{Error: why}, err
	}
	res := &storev1.PartnerKeyResult{}
	until := r.GetOldExpiresAt()
	if until == nil {
		until = timestamppb.New(tx.appendedAt)
	}
	for _, k := range old {
		if k.GetRevoked() {
			continue
		}
		if exp := k.GetExpiresAt(); exp != nil && !exp.AsTime().After(until.AsTime()) {
			continue
		}
		k.ExpiresAt = until
		if err := tx.setProto(partnerKeyKey(k.GetId()), k); err != nil {
			return nil, err
		}
		res.ExpiredKeys = append(res.ExpiredKeys, k.GetId())
	}
	return res, nil
}

// applyRevokePartnerKey revokes a key: from the moment a node applies this entry, it
// refuses the key.
func applyRevokePartnerKey(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var r storev1.RevokePartnerKey
	if err := decodePayload(cmd, &r); err != nil {
		return nil, err
	}
	k := &storev1.PartnerKey{}
	ok, err := tx.getProto(partnerKeyKey(r.GetKeyId()), k)
	if err != nil {
		return nil, err
	}
	if !ok || k.GetPartner() != r.GetPartner() {
		return &storev1.PartnerKeyResult{Error: fmt.Sprintf("partner %s has no key %s (see crossdock partners keys ls %s)", r.GetPartner(), r.GetKeyId(), r.GetPartner())}, nil
	}
	if k.GetRevoked() {
		return &storev1.PartnerKeyResult{}, nil
	}
	at := r.GetAt()
	if at == nil {
		at = timestamppb.New(tx.appendedAt)
	}
	k.Revoked, k.RevokedAt = true, at
	return &storev1.PartnerKeyResult{}, tx.setProto(partnerKeyKey(k.GetId()), k)
}

// applyLeaseQuota grants a node min(block, quota − granted) of a partner's daily quota:
// the sum granted for a day never exceeds the quota the leases name.
func applyLeaseQuota(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var l storev1.LeaseQuota
	if err := decodePayload(cmd, &l); err != nil {
		return nil, err
	}
	if checkPartnerName(l.GetPartner()) != nil || len(l.GetDay()) != len("2006-01-02") || l.GetNode() == "" || len(l.GetNode()) > maxKeyPart {
		return &storev1.LeaseQuotaResult{}, nil
	}
	k := partnerDayKey(prefixPartnerQuota, l.GetPartner(), l.GetDay())
	rec := &storev1.QuotaRecord{}
	if _, err := tx.getProto(k, rec); err != nil {
		return nil, err
	}
	rec.Partner, rec.Day, rec.Quota = l.GetPartner(), l.GetDay(), l.GetQuota()
	grant := uint64(0)
	if rec.Granted < l.GetQuota() {
		grant = min(l.GetBlock(), l.GetQuota()-rec.Granted)
	}
	if grant > 0 {
		rec.Granted += grant
		if rec.LeasedByNode == nil {
			rec.LeasedByNode = map[string]uint64{}
		}
		rec.LeasedByNode[l.GetNode()] += grant
		if err := tx.setProto(k, rec); err != nil {
			return nil, err
		}
	}
	return &storev1.LeaseQuotaResult{Granted: grant, GrantedTotal: rec.Granted, Quota: l.GetQuota()}, nil
}

// applyReturnQuota takes back the unused part of a node's blocks (at most what it holds).
func applyReturnQuota(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var r storev1.ReturnQuota
	if err := decodePayload(cmd, &r); err != nil {
		return nil, err
	}
	if checkPartnerName(r.GetPartner()) != nil {
		return nil, nil
	}
	k := partnerDayKey(prefixPartnerQuota, r.GetPartner(), r.GetDay())
	rec := &storev1.QuotaRecord{}
	ok, err := tx.getProto(k, rec)
	if err != nil || !ok {
		return nil, err
	}
	n := min(r.GetUnused(), rec.GetLeasedByNode()[r.GetNode()], rec.GetGranted())
	if n == 0 {
		return nil, nil
	}
	rec.LeasedByNode[r.GetNode()] -= n
	rec.Granted -= n
	return nil, tx.setProto(k, rec)
}

// applyRecordPartnerUsage adds a node's batched counters, refusals and key uses.
func applyRecordPartnerUsage(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var r storev1.RecordPartnerUsage
	if err := decodePayload(cmd, &r); err != nil {
		return nil, err
	}
	if len(r.GetUsage()) > maxUsageEntries {
		return nil, nil
	}
	for _, u := range r.GetUsage() {
		if checkPartnerName(u.GetPartner()) != nil || len(u.GetDay()) != len("2006-01-02") || len(u.GetCalls()) > maxUsageEntries {
			continue
		}
		k := partnerDayKey(prefixPartnerUsage, u.GetPartner(), u.GetDay())
		rec := &storev1.PartnerUsageRecord{}
		if _, err := tx.getProto(k, rec); err != nil {
			return nil, err
		}
		rec.Partner, rec.Day = u.GetPartner(), u.GetDay()
		if rec.Calls == nil {
			rec.Calls = map[string]uint64{}
		}
		for m, n := range u.GetCalls() {
			rec.Calls[m] += n
		}
		if err := tx.setProto(k, rec); err != nil {
			return nil, err
		}
		if u.GetQuotaUsed() > 0 {
			qk := partnerDayKey(prefixPartnerQuota, u.GetPartner(), u.GetDay())
			q := &storev1.QuotaRecord{}
			if _, err := tx.getProto(qk, q); err != nil {
				return nil, err
			}
			q.Partner, q.Day = u.GetPartner(), u.GetDay()
			q.Used += u.GetQuotaUsed()
			if err := tx.setProto(qk, q); err != nil {
				return nil, err
			}
		}
		if len(u.GetRefusals()) > 0 {
			rk := cat(prefixPartnerRefusal, []byte(u.GetPartner()))
			rr := &storev1.PartnerUsageRecord{}
			if _, err := tx.getProto(rk, rr); err != nil {
				return nil, err
			}
			rr.Partner = u.GetPartner()
			rr.RecentRefusals = append(rr.RecentRefusals, u.GetRefusals()...)
			if n := len(rr.RecentRefusals); n > MaxRecentRefusals {
				rr.RecentRefusals = rr.RecentRefusals[n-MaxRecentRefusals:]
			}
			if err := tx.setProto(rk, rr); err != nil {
				return nil, err
			}
		}
		ids := make([]string, 0, len(u.GetKeyLastUsedUnixNano()))
		for id := range u.GetKeyLastUsedUnixNano() {
			ids = append(ids, id)
		}
		sort.Strings(ids) // deterministic write order
		for _, id := range ids {
			at := u.GetKeyLastUsedUnixNano()[id]
			key := &storev1.PartnerKey{}
			ok, err := tx.getProto(partnerKeyKey(id), key)
			if err != nil {
				return nil, err
			}
			if !ok || key.GetPartner() != u.GetPartner() || (key.GetLastUsedAt() != nil && key.GetLastUsedAt().AsTime().UnixNano() >= at) {
				continue
			}
			key.LastUsedAt, key.LastUsedNode = timestamppb.New(time.Unix(0, at)), r.GetNode()
			if err := tx.setProto(partnerKeyKey(id), key); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

func partnerKeysTxn(txn *badger.Txn, partner string) ([]*storev1.PartnerKey, error) {
	var out []*storev1.PartnerKey
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixPartnerKey
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := &storev1.PartnerKey{}
		if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, k) }); err != nil {
			return nil, fmt.Errorf("ledger: decode partner key %q: %w", it.Item().Key(), err)
		}
		if partner == "" || k.GetPartner() == partner {
			out = append(out, k)
		}
	}
	return out, nil
}

// PartnerKey returns a partner API key by id.
func (l *Ledger) PartnerKey(id string) (*storev1.PartnerKey, bool, error) {
	k := &storev1.PartnerKey{}
	ok, err := l.getProto(partnerKeyKey(id), k)
	return k, ok, err
}

// PartnerKeys returns the keys of a partner (every partner's when empty), by id.
func (l *Ledger) PartnerKeys(partner string) ([]*storev1.PartnerKey, error) {
	var out []*storev1.PartnerKey
	err := l.view(func(txn *badger.Txn) error {
		var err error
		out, err = partnerKeysTxn(txn, partner)
		return err
	})
	return out, err
}

// PartnerQuota returns a partner's quota state of a UTC day ("2006-01-02").
func (l *Ledger) PartnerQuota(partner, day string) (*storev1.QuotaRecord, error) {
	rec := &storev1.QuotaRecord{}
	_, err := l.getProto(partnerDayKey(prefixPartnerQuota, partner, day), rec)
	return rec, err
}

// PartnerUsage returns a partner's reported calls of a UTC day and its recent refusals.
func (l *Ledger) PartnerUsage(partner, day string) (calls map[string]uint64, refusals []*storev1.PartnerRefusal, err error) {
	rec := &storev1.PartnerUsageRecord{}
	if _, err := l.getProto(partnerDayKey(prefixPartnerUsage, partner, day), rec); err != nil {
		return nil, nil, err
	}
	rr := &storev1.PartnerUsageRecord{}
	if _, err := l.getProto(cat(prefixPartnerRefusal, []byte(partner)), rr); err != nil {
		return nil, nil, err
	}
	return rec.GetCalls(), rr.GetRecentRefusals(), nil
}
