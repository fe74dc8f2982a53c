package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/partner"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// PartnerOpenAPIPath serves the partner API's OpenAPI document, without credentials.
const PartnerOpenAPIPath = "/openapi/partner.v1.yaml"

// PartnerOpenAPI serves the OpenAPI document of crossdock.partner.v1.
func PartnerOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(partner.OpenAPI)
}

// PartnerAdmin serves PartnerAdminService: partners' keys, limits and traffic, for
// operators. Writes and reads run on the leader.
type PartnerAdmin struct {
	*Backend
	Dir *partner.Directory
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

var _ partnerv1connect.PartnerAdminServiceHandler = (*PartnerAdmin)(nil)

func (a *PartnerAdmin) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *PartnerAdmin) partner(name string) (*partner.Partner, error) {
	if name == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("partner: required"))
	}
	p, ok, err := a.Dir.Get(name)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no partner %q: apply a Partner document first (see crossdock partners ls)", name))
	}
	return p, nil
}

func keyResultError(res any) error {
	r, _ := res.(*storev1.PartnerKeyResult)
	if r.GetError() != "" {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New(r.GetError()))
	}
	return nil
}

func newKeyRecord(partnerName string, now time.Time, expiresIn time.Duration) (*storev1.PartnerKey, string, error) {
	id, hash, full, err := partner.NewKey()
	if err != nil {
		return nil, "", connect.NewError(connect.CodeInternal, err)
	}
	k := &storev1.PartnerKey{Id: id, Partner: partnerName, SecretSha256: hash, CreatedAt: timestamppb.New(now)}
	if expiresIn > 0 {
		k.ExpiresAt = timestamppb.New(now.Add(expiresIn))
	}
	return k, full, nil
}

// CreateKey makes a key; the whole key is in the answer only.
func (a *PartnerAdmin) CreateKey(ctx context.Context, req *connect.Request[partnerv1.CreateKeyRequest]) (*connect.Response[partnerv1.CreateKeyResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if _, err := a.partner(req.Msg.GetPartner()); err != nil {
		return nil, err
	}
	if d := req.Msg.GetExpiresIn().AsDuration(); d < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("expires_in: must not be negative"))
	}
	k, full, err := newKeyRecord(req.Msg.GetPartner(), a.now(), req.Msg.GetExpiresIn().AsDuration())
	if err != nil {
		return nil, err
	}
	res, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_PARTNER_KEY, &storev1.PutPartnerKey{Key: k})
	if err != nil {
		return nil, a.storeError(err)
	}
	if err := keyResultError(res); err != nil {
		return nil, err
	}
	return connect.NewResponse(&partnerv1.CreateKeyResponse{Key: full, Info: keyInfo(k, a.now())}), nil
}

// RotateKey makes a new key and sets the partner's other keys to expire after the
// grace window, in one raft entry.
func (a *PartnerAdmin) RotateKey(ctx context.Context, req *connect.Request[partnerv1.RotateKeyRequest]) (*connect.Response[partnerv1.RotateKeyResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if _, err := a.partner(req.Msg.GetPartner()); err != nil {
		return nil, err
	}
	grace := 24 * time.Hour
	if req.Msg.GetGrace() != nil {
		grace = req.Msg.GetGrace().AsDuration()
	}
	if grace < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("grace: must not be negative"))
	}
	now := a.now()
	k, full, err := newKeyRecord(req.Msg.GetPartner(), now, req.Msg.GetExpiresIn().AsDuration())
	if err != nil {
		return nil, err
	}
	until := timestamppb.New(now.Add(grace))
	res, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_ROTATE_PARTNER_KEY, &storev1.RotatePartnerKey{Key: k, OldExpiresAt: until})
	if err != nil {
		return nil, a.storeError(err)
	}
	if err := keyResultError(res); err != nil {
		return nil, err
	}
	r, _ := res.(*storev1.PartnerKeyResult)
	return connect.NewResponse(&partnerv1.RotateKeyResponse{Key: full, Info: keyInfo(k, now), ExpiringKeys: r.GetExpiredKeys(), OldKeysExpireAt: until}), nil
}

// RevokeKey revokes a key on every node as it applies the entry.
func (a *PartnerAdmin) RevokeKey(ctx context.Context, req *connect.Request[partnerv1.RevokeKeyRequest]) (*connect.Response[partnerv1.RevokeKeyResponse], error) {
	if !a.Store.IsLeader() {
		return nil, a.notLeader()
	}
	id := strings.TrimSuffix(strings.TrimPrefix(req.Msg.GetKeyId(), partner.KeyPrefix), "_…")
	if full, _, err := partner.ParseKey(req.Msg.GetKeyId()); err == nil {
		id = full // a whole key was pasted: revoke it by its id
	}
	res, err := a.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_REVOKE_PARTNER_KEY, &storev1.RevokePartnerKey{
		Partner: req.Msg.GetPartner(), KeyId: id, At: timestamppb.New(a.now()),
	})
	if err != nil {
		return nil, a.storeError(err)
	}
	if r, _ := res.(*storev1.PartnerKeyResult); r.GetError() != "" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New(r.GetError()))
	}
	return connect.NewResponse(&partnerv1.RevokeKeyResponse{}), nil
}

// ListKeys lists a partner's keys without their secrets.
func (a *PartnerAdmin) ListKeys(ctx context.Context, req *connect.Request[partnerv1.ListKeysRequest]) (*connect.Response[partnerv1.ListKeysResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	keys, err := a.keys(req.Msg.GetPartner())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&partnerv1.ListKeysResponse{Keys: keys}), nil
}

func (a *PartnerAdmin) keys(name string) ([]*partnerv1.KeyInfo, error) {
	ks, err := a.Store.Ledger().PartnerKeys(name)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].GetCreatedAt().AsTime().Before(ks[j].GetCreatedAt().AsTime()) })
	now := a.now()
	out := make([]*partnerv1.KeyInfo, 0, len(ks))
	for _, k := range ks {
		out = append(out, keyInfo(k, now))
	}
	return out, nil
}

func keyInfo(k *storev1.PartnerKey, now time.Time) *partnerv1.KeyInfo {
	state := "active"
	switch {
	case k.GetRevoked():
		state = "revoked"
	case k.GetExpiresAt() != nil && !now.Before(k.GetExpiresAt().AsTime()):
		state = "expired"
	}
	return &partnerv1.KeyInfo{Id: k.GetId(), Partner: k.GetPartner(), Prefix: partner.KeyIDPrefix(k.GetId()), CreatedAt: k.GetCreatedAt(),
		ExpiresAt: k.GetExpiresAt(), LastUsedAt: k.GetLastUsedAt(), State: state, RevokedAt: k.GetRevokedAt()}
}

// ListPartners lists every partner with today's traffic.
func (a *PartnerAdmin) ListPartners(ctx context.Context, req *connect.Request[partnerv1.ListPartnersRequest]) (*connect.Response[partnerv1.ListPartnersResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	all, err := a.Dir.All()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	out := &partnerv1.ListPartnersResponse{}
	for _, n := range names {
		s, _, _, err := a.summary(all[n])
		if err != nil {
			return nil, err
		}
		out.Partners = append(out.Partners, s)
	}
	return connect.NewResponse(out), nil
}

func (a *PartnerAdmin) summary(p *partner.Partner) (*partnerv1.PartnerSummary, map[string]uint64, []*storev1.PartnerRefusal, error) {
	day := partner.Day(a.now())
	l := a.Store.Ledger()
	ks, err := l.PartnerKeys(p.Name)
	if err != nil {
		return nil, nil, nil, connect.NewError(connect.CodeInternal, err)
	}
	active := 0
	for _, k := range ks {
		if keyInfo(k, a.now()).GetState() == "active" {
			active++
		}
	}
	calls, refusals, err := l.PartnerUsage(p.Name, day)
	if err != nil {
		return nil, nil, nil, connect.NewError(connect.CodeInternal, err)
	}
	q, err := l.PartnerQuota(p.Name, day)
	if err != nil {
		return nil, nil, nil, connect.NewError(connect.CodeInternal, err)
	}
	var total uint64
	for _, n := range calls {
		total += n
	}
	return &partnerv1.PartnerSummary{
		Name: p.Name, DisplayName: p.Spec.DisplayName, Tier: p.Spec.Tier, Scopes: p.Spec.Scopes, ActiveKeys: uint32(active),
		CallsToday: total, QuotaUsedToday: q.GetUsed(), DailyQuota: uint64(p.Limits.DailyQuota),
	}, calls, refusals, nil
}

// DescribePartner shows a partner's keys, limits, today's traffic and recent refusals.
func (a *PartnerAdmin) DescribePartner(ctx context.Context, req *connect.Request[partnerv1.DescribePartnerRequest]) (*connect.Response[partnerv1.DescribePartnerResponse], error) {
	if err := a.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	p, err := a.partner(req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	sum, calls, refusals, err := a.summary(p)
	if err != nil {
		return nil, err
	}
	keys, err := a.keys(p.Name)
	if err != nil {
		return nil, err
	}
	day := partner.Day(a.now())
	q, err := a.Store.Ledger().PartnerQuota(p.Name, day)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out := &partnerv1.DescribePartnerResponse{
		Summary: sum, Keys: keys, CallsToday: calls, QuotaGrantedToday: q.GetGranted(), QuotaLeasedByNode: q.GetLeasedByNode(), Day: day,
		Limits: &partnerv1.Limits{RequestsPerSecond: p.Limits.RequestsPerSecond, Burst: int32(p.Limits.Burst), DailyQuota: uint64(p.Limits.DailyQuota),
			MaxBodyBytes: int64(p.Limits.MaxBodyBytes), MaxItemsPerCall: int32(p.Limits.MaxItemsPerCall)},
	}
	for _, r := range refusals {
		out.RecentRefusals = append(out.RecentRefusals, &partnerv1.Refusal{At: r.GetAt(), Node: r.GetNode(), Method: r.GetMethod(), Reason: r.GetReason(), KeyId: r.GetKeyId(), Detail: r.GetDetail()})
	}
	return connect.NewResponse(out), nil
}
