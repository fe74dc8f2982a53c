package ledger

import (
	"bytes"
	"testing"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// TestLeaseQuota: leases never grant more than the quota in total; a return gives
// back at most what the node holds; two replicas applying the same log agree.
func TestLeaseQuota(t *testing.T) {
	a, b := newLedger(t, false), newLedger(t, false)
	la, lb := &raftLog{t: t}, &raftLog{t: t}
	lease := func(node string, block uint64) *storev1.LeaseQuotaResult {
		cmd := command(t, storev1.CommandType_COMMAND_TYPE_LEASE_QUOTA, &storev1.LeaseQuota{Partner: "p", Day: "2026-12-04", Node: node, Block: block, Quota: 100})
		lb.apply(b, cmd)
		return la.apply(a, cmd).(*storev1.LeaseQuotaResult)
	}
	var total uint64
	for i := range 12 {
		r := lease([]string{"n1", "n2", "n3"}[i%3], 20)
		total += r.GetGranted()
		if r.GetGrantedTotal() != total {
			t.Fatalf("lease %d: granted total %d, want %d", i, r.GetGrantedTotal(), total)
		}
	}
	if total != 100 {
		t.Fatalf("granted %d in all, want the quota of 100", total)
	}
	if r := lease("n1", 20); r.GetGranted() != 0 {
		t.Fatalf("granted %d past the quota", r.GetGranted())
	}
	ret := command(t, storev1.CommandType_COMMAND_TYPE_RETURN_QUOTA, &storev1.ReturnQuota{Partner: "p", Day: "2026-12-04", Node: "n2", Unused: 1000})
	la.apply(a, ret)
	lb.apply(b, ret)
	q, err := a.PartnerQuota("p", "2026-12-04")
	if err != nil {
		t.Fatal(err)
	}
	if q.GetGranted() != 60 || q.GetLeasedByNode()["n2"] != 0 || q.GetLeasedByNode()["n1"] != 40 {
		t.Fatalf("after n2 returned everything: %v", q)
	}
	if r := lease("n3", 50); r.GetGranted() != 40 {
		t.Fatalf("after a return, granted %d, want the 40 returned", r.GetGranted())
	}
	if mustHash(t, a) != mustHash(t, b) {
		t.Fatal("replicas differ")
	}
}

// TestRotateAndRevokePartnerKey: a rotation stores the new key and moves the expiry of
// the live keys in one entry; a revoke names the partner.
func TestRotateAndRevokePartnerKey(t *testing.T) {
	l := newLedger(t, false)
	lg := &raftLog{t: t}
	hash := bytes.Repeat([]byte{1}, 32)
	put := func(id string) {
		r := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_PARTNER_KEY, &storev1.PutPartnerKey{Key: &storev1.PartnerKey{Id: id, Partner: "p", SecretSha256: hash}})).(*storev1.PartnerKeyResult)
		if r.GetError() != "" {
			t.Fatal(r.GetError())
		}
	}
	put("k1")
	put("k2")
	if r := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_PUT_PARTNER_KEY, &storev1.PutPartnerKey{Key: &storev1.PartnerKey{Id: "k1", Partner: "p", SecretSha256: hash}})).(*storev1.PartnerKeyResult); r.GetError() == "" {
		t.Fatal("a second key with id k1 was accepted")
	}
	if r := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_REVOKE_PARTNER_KEY, &storev1.RevokePartnerKey{Partner: "other", KeyId: "k2"})).(*storev1.PartnerKeyResult); r.GetError() == "" {
		t.Fatal("another partner revoked k2")
	}
	lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_REVOKE_PARTNER_KEY, &storev1.RevokePartnerKey{Partner: "p", KeyId: "k2"}))
	until := ts(at(100))
	r := lg.apply(l, command(t, storev1.CommandType_COMMAND_TYPE_ROTATE_PARTNER_KEY, &storev1.RotatePartnerKey{
		Key: &storev1.PartnerKey{Id: "k3", Partner: "p", SecretSha256: hash}, OldExpiresAt: until,
	})).(*storev1.PartnerKeyResult)
	if r.GetError() != "" || len(r.GetExpiredKeys()) != 1 || r.GetExpiredKeys()[0] != "k1" {
		t.Fatalf("rotation: %v", r)
	}
	k1, _, _ := l.PartnerKey("k1")
	k2, _, _ := l.PartnerKey("k2")
	k3, ok, _ := l.PartnerKey("k3")
	if !k1.GetExpiresAt().AsTime().Equal(at(100)) || !k2.GetRevoked() || !ok || k3.GetExpiresAt() != nil {
		t.Fatalf("after rotation: k1 %v, k2 %v, k3 %v", k1, k2, k3)
	}
}
