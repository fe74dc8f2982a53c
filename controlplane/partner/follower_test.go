package partner_test

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// TestAvailabilityOnFollowerAfterSeq: a level committed through the leader is in a
// follower's GetAvailability asked with the seq the commit reported (min_seq, read
// your writes), with each partner's rule applied: acme (80%, safety stock 5, A-* at
// WH-1) and globex (everything as is) see different numbers for the same level.
func TestAvailabilityOnFollowerAfterSeq(t *testing.T) {
	e := newEnv(t, 3, "")
	leader := e.cluster.WaitLeader(nil)
	var follower *controlplanetest.Server
	for _, n := range e.nodes {
		if n != leader {
			follower = n
			break
		}
	}
	acme, globex := e.key("acme", 0), e.key("globex", 0)
	seq := e.propose(&eventv1.Event{Type: "inventory.level", Keys: map[string]string{"sku": "A-1", "location": "WH-1"},
		Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
			Sku: "A-1", Location: "WH-1", OnHand: "60", Allocated: "0", Available: "60", UnitOfMeasure: "EA"}}})
	ask := func(key string) (string, uint64) {
		t.Helper()
		res, err := e.client(follower, key).GetAvailability(context.Background(),
			connect.NewRequest(&partnerv1.GetAvailabilityRequest{Skus: []string{"A-1"}, Locations: []string{"WH-1"}, MinSeq: seq}))
		if err != nil {
			t.Fatalf("GetAvailability on follower %s with min_seq %d: %v", follower.Config.NodeID, seq, err)
		}
		if len(res.Msg.GetAvailability()) != 1 {
			t.Fatalf("availability %v", res.Msg.GetAvailability())
		}
		return res.Msg.GetAvailability()[0].GetAvailable(), res.Msg.GetSeq()
	}
	got, at := ask(acme)
	if got != "48" || at < seq { // floor(60 × 80%) = 48, leaving 12 ≥ 5
		t.Fatalf("acme sees A-1@WH-1 = %s at seq %d, want 48 at %d or later", got, at, seq)
	}
	if got, _ := ask(globex); got != "60" {
		t.Fatalf("globex sees A-1@WH-1 = %s, want 60", got)
	}
}

// TestInventoryAsPartner: the admin API's GetInventory with as_partner shows what the
// partner's GetAvailability answers (crossdock inventory get --as-partner), and names
// an unknown partner.
func TestInventoryAsPartner(t *testing.T) {
	e := newEnv(t, 1, "")
	admin := controlplanetest.AdminClient(t, e.nodes[0].AdminConfigPath())
	get := func(as string) (map[string]string, error) {
		res, err := admin.GetInventory(context.Background(), connect.NewRequest(&adminv1.GetInventoryRequest{Skus: []string{"A-1", "A-2", "B-1"}, AsPartner: as}))
		if err != nil {
			return nil, err
		}
		m := map[string]string{}
		for _, l := range res.Msg.GetLevels() {
			m[l.GetSku()+"@"+l.GetLocation()] = l.GetOnHand() + "/" + l.GetAvailable()
		}
		return m, nil
	}
	if m, err := get(""); err != nil || len(m) != 4 || m["A-1@WH-1"] != "110/100" {
		t.Fatalf("as the operator: %v %v", m, err)
	}
	if m, err := get("acme"); err != nil || len(m) != 2 || m["A-1@WH-1"] != "110/80" || m["A-2@WH-1"] != "20/15" {
		t.Fatalf("as acme: %v %v", m, err)
	}
	if _, err := get("nobody"); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `no partner "nobody"`) {
		t.Fatalf("as an unknown partner: %v", err)
	}
}
