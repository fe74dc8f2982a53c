package alerts

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// ledgerStore applies proposals to a real in-memory ledger at consecutive indexes, as
// raft would on a single node that always leads.
type ledgerStore struct {
	t   *testing.T
	l   *ledger.Ledger
	idx uint64
}

func (s *ledgerStore) IsLeader() bool         { return true }
func (s *ledgerStore) Ledger() *ledger.Ledger { return s.l }
func (s *ledgerStore) Propose(_ context.Context, typ storev1.CommandType, msg proto.Message) (any, error) {
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, err
	}
	s.idx++
	return s.l.Apply(s.idx, time.Now(), &storev1.Command{Type: typ, Payload: payload})
}

func newLedgerStore(t *testing.T, docs string) *ledgerStore {
	t.Helper()
	l, err := ledger.Open(ledger.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &ledgerStore{t: t, l: l}
	parsed, err := routing.Parse([]byte(docs))
	if err != nil {
		t.Fatal(err)
	}
	put := &storev1.PutDocuments{}
	for _, d := range parsed {
		c, err := d.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		put.Documents = append(put.Documents, &storev1.DocumentContent{Kind: string(d.Kind), Name: d.Name(), Content: c})
	}
	if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT, put); err != nil {
		t.Fatal(err)
	}
	// Enroll agent wh-1.
	secret := sha256.Sum256([]byte("secret"))
	exp := timestamppb.New(time.Now().Add(time.Hour))
	if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_PUT_TOKEN, &storev1.PutToken{Id: "t1", SecretSha256: secret[:], Kind: "agent", ExpiresAt: exp, AgentName: "wh-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{Id: "t1", SecretSha256: secret[:], At: timestamppb.Now()}); err != nil {
		t.Fatal(err)
	}
	if recs, _ := l.Agents(); len(recs) != 1 {
		t.Fatalf("enrolled agents: %v", recs)
	}
	return s
}

type overdue map[string]int // an EDI stand-in: the EDI code is not merged into this build

func (o overdue) OverdueAcks(partner string) int { return o[partner] }

func states(t *testing.T, s *ledgerStore) map[string]*storev1.AlertInstance {
	t.Helper()
	all, err := s.l.AlertStates()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*storev1.AlertInstance{}
	for _, in := range all {
		out[in.GetAlert()+" "+in.GetKey()] = in
	}
	return out
}

const evalDocs = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: gold}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: gold, scopes: [orders:write], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bolt}
spec: {tier: gold, scopes: [orders:write], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: stalled}
spec: {condition: connectorStalled, connectors: [erp], threshold: {stalledFor: 1m}}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: acks}
spec: {condition: ediAckOverdue, threshold: {overdueAcks: 5}, tiers: {gold: {overdueAcks: 2}}}
`

func TestEvaluateConnectorStalledAndEDIAcks(t *testing.T) {
	s := newLedgerStore(t, evalDocs)
	now := time.Now()
	conn := &agentv1.ConnectorStatus{Name: "erp", State: "stalled", StateSince: timestamppb.New(now.Add(-30 * time.Second)), LastError: "event refused"}
	edi := overdue{"acme": 2, "bolt": 1}
	e := New(Config{
		Store:     s,
		Delivery:  func() ([]delivery.DestinationStatus, error) { return nil, nil },
		Connected: func() []string { return []string{"wh-1"} },
		Connectors: func(string) (ConnectorReport, bool) {
			return ConnectorReport{At: now, Connectors: []*agentv1.ConnectorStatus{conn}}, true
		},
		EDI: edi,
	})
	ctx := context.Background()
	if err := e.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	st := states(t, s)
	if in := st["stalled agent=wh-1,connector=erp"]; in != nil {
		t.Errorf("stalled for 30s of a 1m threshold, yet: %v", in)
	}
	if in := st["acks partner=acme"]; in.GetState() != StateFiring || in.GetLabels()["tier"] != "gold" {
		t.Errorf("acme has 2 overdue acks, its tier's threshold: %v", in)
	}
	if in := st["acks partner=bolt"]; in != nil {
		t.Errorf("bolt has 1 overdue ack, under the threshold: %v", in)
	}

	conn.StateSince = timestamppb.New(now.Add(-2 * time.Minute))
	if err := e.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	if in := states(t, s)["stalled agent=wh-1,connector=erp"]; in.GetState() != StateFiring {
		t.Errorf("stalled for 2m of a 1m threshold: %v", in)
	}
	// Changes without receivers are recorded notified.
	if in := states(t, s)["acks partner=acme"]; !in.GetNotified() {
		t.Errorf("a change of an alert without notify is not recorded notified: %v", in)
	}

	conn.State = "running"
	edi["acme"] = 0
	if err := e.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	st = states(t, s)
	if st["stalled agent=wh-1,connector=erp"].GetState() != StateResolved || st["acks partner=acme"].GetState() != StateResolved {
		t.Errorf("after recovery: %v", st)
	}
}

func TestEDIAckOverdueNeverFiresWithoutEDI(t *testing.T) {
	s := newLedgerStore(t, evalDocs)
	e := New(Config{Store: s, Delivery: func() ([]delivery.DestinationStatus, error) { return nil, nil },
		Connected: func() []string { return nil }, Connectors: func(string) (ConnectorReport, bool) { return ConnectorReport{}, false }})
	for range 3 {
		if err := e.Evaluate(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for k, in := range states(t, s) {
		if in.GetAlert() == "acks" {
			t.Errorf("ediAckOverdue without the EDI code: %s %v", k, in)
		}
	}
}
