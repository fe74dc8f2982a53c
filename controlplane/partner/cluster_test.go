package partner_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// TestRevokeAndRotateOnEveryNode: a revoked key is refused by all three nodes within a
// second of the revoke; a rotation's new key works on every node and the old one stops
// when its grace ends.
func TestRevokeAndRotateOnEveryNode(t *testing.T) {
	e := newEnv(t, 3, "")
	key := e.key("globex", 0)
	auth := "Bearer " + key
	for _, n := range e.nodes {
		if res, b := e.post(n, "GetAvailability", auth, availability); res.StatusCode != http.StatusOK {
			t.Fatalf("%s before revoke: %d %s", n.Config.NodeID, res.StatusCode, b)
		}
	}
	id := key[len("cdk_") : len("cdk_")+16]
	if _, err := e.admin.RevokeKey(context.Background(), connect.NewRequest(&partnerv1.RevokeKeyRequest{Partner: "globex", KeyId: id})); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for _, n := range e.nodes {
		controlplanetest.WaitFor(t, time.Second-time.Since(revoked), n.Config.NodeID+" refuses the revoked key", func() bool {
			res, _ := e.post(n, "GetAvailability", auth, availability)
			return res.StatusCode == http.StatusUnauthorized
		})
		res, b := e.post(n, "GetAvailability", auth, availability)
		wantRefusal(t, res, b, http.StatusUnauthorized, "unauthenticated", "was revoked at")
	}
	t.Logf("every node refused the revoked key %s after the revoke returned", time.Since(revoked))

	old := e.key("globex", 0)
	rot, err := e.admin.RotateKey(context.Background(), connect.NewRequest(&partnerv1.RotateKeyRequest{Partner: "globex", Grace: durationpb.New(700 * time.Millisecond)}))
	if err != nil {
		t.Fatal(err)
	}
	if got := rot.Msg.GetExpiringKeys(); len(got) != 1 || !strings.HasPrefix(old, "cdk_"+got[0]+"_") {
		t.Fatalf("rotation expires %v, want only the live key %s", got, old[:20])
	}
	e.waitKey(rot.Msg.GetInfo().GetId())
	for _, n := range e.nodes {
		if res, b := e.post(n, "GetAvailability", "Bearer "+rot.Msg.GetKey(), availability); res.StatusCode != http.StatusOK {
			t.Fatalf("%s new key: %d %s", n.Config.NodeID, res.StatusCode, b)
		}
	}
	for _, n := range e.nodes {
		controlplanetest.WaitFor(t, 3*time.Second, n.Config.NodeID+" refuses the rotated-out key after its grace", func() bool {
			res, _ := e.post(n, "GetAvailability", "Bearer "+old, availability)
			return res.StatusCode == http.StatusUnauthorized
		})
	}
	ls, err := e.admin.ListKeys(context.Background(), connect.NewRequest(&partnerv1.ListKeysRequest{Partner: "globex"}))
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, k := range ls.Msg.GetKeys() {
		states[k.GetId()] = k.GetState()
	}
	if states[id] != "revoked" || states[rot.Msg.GetInfo().GetId()] != "active" || len(states) != 3 {
		t.Fatalf("keys ls states %v", states)
	}
}

// TestQuotaExactAcrossCluster: 20 clients spread over 3 nodes against a daily quota of
// 1,000 (at 50 requests/s per node, so the day lasts some seconds), through a leader
// change and with one node partitioned: the clients count at most 1,000 served calls,
// and the partitioned node refuses once it has served what it holds.
func TestQuotaExactAcrossCluster(t *testing.T) {
	const quota = 1000
	e := newEnv(t, 3, `---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: busy
spec:
  tier: standard
  scopes: [availability:read]
  skus: ["*"]
  limits:
    dailyQuota: 1000
    requestsPerSecond: 50
    burst: 10
`)
	controlplanetest.WaitFor(t, 10*time.Second, "busy on every node", func() bool {
		for _, s := range e.nodes {
			if _, ok, _ := s.Store().Ledger().Document("Partner", "busy"); !ok {
				return false
			}
		}
		return true
	})
	key := e.key("busy", 0)
	var served, exhausted, unreachable, limited, other atomic.Int64
	var servedBy [3]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	req := &partnerv1.GetAvailabilityRequest{Skus: []string{"A-1"}}
	for c := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ni := c % 3
			cl := e.client(e.nodes[ni], key)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := cl.GetAvailability(context.Background(), connect.NewRequest(req))
				switch {
				case err == nil:
					served.Add(1)
					servedBy[ni].Add(1)
				case strings.Contains(err.Error(), "daily quota exhausted"):
					exhausted.Add(1)
				case strings.Contains(err.Error(), "cannot reach the cluster leader"):
					unreachable.Add(1)
				case strings.Contains(err.Error(), "rate limit"):
					limited.Add(1) // 50/s per node keeps the day long enough to see the partition
				default:
					if other.Add(1) < 5 {
						t.Logf("node-%d: %v", ni+1, err)
					}
				}
			}
		}()
	}
	// A leader change once a third is served.
	controlplanetest.WaitFor(t, 30*time.Second, "a third of the quota served", func() bool { return served.Load() >= quota/3 })
	old := e.cluster.Leader()
	if err := old.Store().Raft().LeadershipTransfer().Error(); err != nil {
		t.Logf("leadership transfer: %v", err)
	}
	leader := e.cluster.WaitLeader(old)
	// Then one follower is cut off from the others' raft traffic.
	var cut int
	for i, n := range e.nodes {
		if n != leader {
			cut = i
			break
		}
	}
	var rest []*controlplanetest.Server
	for i, n := range e.nodes {
		if i != cut {
			rest = append(rest, n)
		}
	}
	e.cluster.Faults.Partition(controlplanetest.RaftAddrs(e.nodes[cut]), controlplanetest.RaftAddrs(rest...))
	// The partitioned node should refuse once it has served what it holds; whether it
	// runs out before the majority spends the day's quota depends on timing, so this
	// is logged, not asserted (see the report: a gap to close).
	controlplanetest.WaitFor(t, 30*time.Second, "the partitioned node to refuse, or the quota to run out", func() bool {
		return unreachable.Load() > 0 || exhausted.Load() > 100
	})
	controlplanetest.WaitFor(t, 30*time.Second, "the quota to run out", func() bool { return exhausted.Load() > 100 })
	close(stop)
	wg.Wait()
	e.cluster.Faults.Heal()
	t.Logf("served %d (by node %d/%d/%d), refused: exhausted %d, no leader %d, other %d; node-%d was partitioned",
		served.Load(), servedBy[0].Load(), servedBy[1].Load(), servedBy[2].Load(), exhausted.Load(), unreachable.Load(), other.Load(), cut+1)
	if s := served.Load(); s > quota {
		t.Fatalf("served %d calls, more than the daily quota of %d", s, quota)
	}
	// Blocks lost are those whose lease outcome a node never learnt (a leader change
	// while proposing): at most a few blocks of 20.
	if s := served.Load(); s < quota-6*20 {
		t.Fatalf("served only %d of the quota of %d", s, quota)
	}
}
