package ledger

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Named admin credentials and the audit trail of mutating admin calls.
//
//	fleet/cred/ + credential id   -> AdminCredential
//	fleet/audit/ + u64BE(index)   -> AuditRecord
//	m/auditidx                    -> u64BE, the last audit index
var (
	prefixCredential = []byte("fleet/cred/")
	prefixAudit      = []byte("fleet/audit/")
	keyAuditIndex    = []byte("m/auditidx")
)

// Admin roles, weakest first.
var Roles = []string{"viewer", "operator", "admin"}

func credentialKey(id string) []byte { return cat(prefixCredential, []byte(id)) }

func applyPutAdminCredential(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.PutAdminCredential
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	c := p.GetCredential()
	refuse := func(format string, args ...any) (any, error) {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%v: ", ErrInvalidCommand) + fmt.Sprintf(format, args...)}, nil
	}
	switch {
	case c.GetId() == "" || len(c.GetId()) > 64 || c.GetName() == "" || len(c.GetName()) > 64:
		return refuse("credential id and name must be 1 to 64 bytes")
	case len(c.GetSecretSha256()) != 32:
		return refuse("credential secret hash must be 32 bytes")
	case c.GetRole() != "viewer" && c.GetRole() != "operator" && c.GetRole() != "admin":
		return refuse("role %q is not viewer, operator or admin", c.GetRole())
	}
	var clash string
	if err := tx.scanCredentials(func(o *storev1.AdminCredential) {
		if o.GetId() == c.GetId() || (o.GetName() == c.GetName() && !o.GetRevoked() && o.GetExpiresAt().AsTime().After(tx.appendedAt)) {
			clash = o.GetName()
		}
	}); err != nil {
		return nil, err
	}
	if clash != "" {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("a live credential is named %q already (revoke it first)", clash)}, nil
	}
	return &storev1.FleetCommandResult{}, tx.setProto(credentialKey(c.GetId()), c)
}

func applyRevokeAdminCredential(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.RevokeAdminCredential
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	var found []*storev1.AdminCredential
	if err := tx.scanCredentials(func(o *storev1.AdminCredential) {
		if o.GetName() == p.GetName() && !o.GetRevoked() {
			found = append(found, o)
		}
	}); err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("no live credential named %q", p.GetName())}, nil
	}
	at := p.GetAt()
	if at == nil {
		at = timestamppb.New(tx.appendedAt)
	}
	for _, c := range found {
		c.Revoked, c.RevokedAt = true, at
		if err := tx.setProto(credentialKey(c.GetId()), c); err != nil {
			return nil, err
		}
	}
	return &storev1.FleetCommandResult{}, nil
}

func applyRecordAudit(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var p storev1.RecordAudit
	if err := decodePayload(cmd, &p); err != nil {
		return nil, err
	}
	r := p.GetRecord()
	if r == nil || len(r.GetProcedure()) > 256 || len(r.GetActor()) > 64 {
		return &storev1.FleetCommandResult{Error: fmt.Sprintf("%v: audit record missing or too large", ErrInvalidCommand)}, nil
	}
	idx, err := getU64(tx.txn.Txn, keyAuditIndex)
	if err != nil {
		return nil, fmt.Errorf("ledger: read audit index: %w", err)
	}
	idx++
	r.Index = idx
	if r.GetAt() == nil {
		r.At = timestamppb.New(tx.appendedAt)
	}
	if err := tx.setProto(cat(prefixAudit, u64(idx)), r); err != nil {
		return nil, err
	}
	return &storev1.FleetCommandResult{}, tx.set(keyAuditIndex, u64(idx))
}

func (tx *applyTxn) scanCredentials(fn func(*storev1.AdminCredential)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefixCredential
	it := tx.txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		c := &storev1.AdminCredential{}
		if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, c) }); err != nil {
			return fmt.Errorf("ledger: decode credential: %w", err)
		}
		fn(c)
	}
	return nil
}

// AdminCredential returns a credential by id.
func (l *Ledger) AdminCredential(id string) (*storev1.AdminCredential, bool, error) {
	c := &storev1.AdminCredential{}
	ok, err := l.getProto(credentialKey(id), c)
	return c, ok, err
}

// AdminCredentials returns every credential, revoked and expired ones included.
func (l *Ledger) AdminCredentials() ([]*storev1.AdminCredential, error) {
	var out []*storev1.AdminCredential
	err := l.view(func(txn *badger.Txn) error {
		tx := &applyTxn{txn: &logTxn{Txn: txn}}
		return tx.scanCredentials(func(c *storev1.AdminCredential) { out = append(out, c) })
	})
	return out, err
}

// Audit returns the audit records fn accepts, oldest first.
func (l *Ledger) Audit(fn func(*storev1.AuditRecord) bool) ([]*storev1.AuditRecord, error) {
	var out []*storev1.AuditRecord
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixAudit
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			r := &storev1.AuditRecord{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, r) }); err != nil {
				return fmt.Errorf("ledger: decode audit record: %w", err)
			}
			if fn(r) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}
