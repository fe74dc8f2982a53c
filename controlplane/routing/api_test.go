package routing_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

// client returns a RoutingService client for the node at addr, with the admin config of
// the cluster (at path). A follower redirects to the leader.
func client(t *testing.T, path, addr string) routingv1connect.RoutingServiceClient {
	t.Helper()
	c, err := cliconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		c.Addr = addr
	}
	hc, base, closeFn, err := c.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return routingv1connect.NewRoutingServiceClient(hc, base)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func apply(t *testing.T, c routingv1connect.RoutingServiceClient, yaml string, dryRun bool) ([]*routingv1.AppliedDocument, error) {
	t.Helper()
	res, err := c.ApplyDocuments(context.Background(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: yaml, DryRun: dryRun}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetDocuments(), nil
}

func actions(docs []*routingv1.AppliedDocument) string {
	var s []string
	for _, d := range docs {
		s = append(s, d.GetKind()+"/"+d.GetName()+"="+strings.TrimPrefix(d.GetAction().String(), "ACTION_")+"@"+fmt.Sprint(d.GetVersion()))
	}
	return strings.Join(s, " ")
}

func listNames(t *testing.T, c routingv1connect.RoutingServiceClient, kind string) []string {
	t.Helper()
	res, err := c.ListDocuments(context.Background(), connect.NewRequest(&routingv1.ListDocumentsRequest{Kind: kind}))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range res.Msg.GetDocuments() {
		out = append(out, d.GetName())
	}
	return out
}

func wantCode(t *testing.T, err error, code connect.Code, substr string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || !strings.Contains(ce.Message(), substr) {
		t.Errorf("error = %v; want %s containing %q", err, code, substr)
	}
}

const levelJSON = `{"type": "inventory.level", "occurredAt": "2026-03-01T07:59:00Z",
  "inventoryLevel": {"sku": "ABC-7", "location": "main", "onHand": "20", "allocated": "5", "available": "15"}}`

func TestApplyHistoryRollbackAndTestRoute(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	c := client(t, srv.AdminConfigPath(), "")
	market := readFile(t, "testdata/marketplace.yaml")

	// Dry run: everything would be created, nothing is.
	docs, err := apply(t, c, market, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(docs); got != "Policy/marketplace-2rps=CREATED@1 Destination/marketplace=CREATED@1 Route/marketplace-inventory=CREATED@1" {
		t.Errorf("dry run = %s", got)
	}
	if n := listNames(t, c, "routes"); len(n) != 0 {
		t.Fatalf("a dry run stored %v", n)
	}
	if !strings.Contains(docs[1].GetDiff(), "+   secret: '***masked*** sha256:") || strings.Contains(docs[1].GetDiff(), "whsec_") {
		t.Errorf("destination diff does not mask the secret:\n%s", docs[1].GetDiff())
	}

	if docs, err = apply(t, c, market, false); err != nil {
		t.Fatal(err)
	}
	if got := actions(docs); !strings.Contains(got, "Route/marketplace-inventory=CREATED@1") {
		t.Errorf("apply = %s", got)
	}
	rev1, _ := srv.Store().Ledger().DocumentsRevision()
	if docs, err = apply(t, c, "# same content, other layout\n"+market, false); err != nil {
		t.Fatal(err)
	}
	if got := actions(docs); got != "Policy/marketplace-2rps=UNCHANGED@1 Destination/marketplace=UNCHANGED@1 Route/marketplace-inventory=UNCHANGED@1" {
		t.Errorf("re-apply = %s", got)
	}
	if rev, _ := srv.Store().Ledger().DocumentsRevision(); rev != rev1 {
		t.Errorf("an unchanged apply moved the documents revision %d -> %d", rev1, rev)
	}

	// Update the mapping: version 2 with a diff of the changed line.
	v2 := strings.Replace(market, `"seq": committed.seq`, `"seq": committed.seq, "warehouse": event.inventory_level.location`, 1)
	if docs, err = apply(t, c, v2, false); err != nil {
		t.Fatal(err)
	}
	route := docs[2]
	if route.GetAction() != routingv1.Action_ACTION_UPDATED || route.GetVersion() != 2 || route.GetPreviousVersion() != 1 {
		t.Errorf("update = %v", route)
	}
	if !strings.Contains(route.GetDiff(), `-       "seq": committed.seq`) || !strings.Contains(route.GetDiff(), `+       "seq": committed.seq, "warehouse"`) {
		t.Errorf("update diff:\n%s", route.GetDiff())
	}

	// Refusals name the document and field, and change nothing.
	_, err = apply(t, c, strings.Replace(market, "destination: marketplace", "destination: marketplce", 1), false)
	wantCode(t, err, connect.CodeInvalidArgument, `routes/marketplace-inventory: spec.destination: no destination "marketplce"`)
	_, err = apply(t, c, strings.Replace(market, "[inventory.level]", "[inventory.level, inventry.level]", 1), false)
	wantCode(t, err, connect.CodeInvalidArgument, `routes/marketplace-inventory: spec.match.types[1]: unknown event type "inventry.level"`)
	_, err = apply(t, c, strings.Replace(market, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "${env:MARKET_SECRET}", 1), false)
	wantCode(t, err, connect.CodeInvalidArgument, "destinations/marketplace: spec.secret: ${env:MARKET_SECRET} must be resolved")

	// The table the delivery engine loads reflects the stored documents.
	tab, err := routing.Load(srv.Store().Ledger())
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := tab.Route("marketplace-inventory"); !ok || r.Version != 2 {
		t.Errorf("loaded route = %+v", r)
	}
	if p := tab.Policy("marketplace"); p.RatePerSecond != 2 || p.Burst != 40 {
		t.Errorf("loaded policy = %+v", p)
	}

	// History and rollback.
	hist, err := c.GetHistory(context.Background(), connect.NewRequest(&routingv1.GetHistoryRequest{Kind: "route", Name: "marketplace-inventory"}))
	if err != nil {
		t.Fatal(err)
	}
	if vs := hist.Msg.GetVersions(); len(vs) != 2 || vs[0].GetComment() != "apply" || vs[1].GetDiff() != route.GetDiff() || vs[0].GetActor() == "" {
		t.Errorf("history = %v", vs)
	}
	rb, err := c.Rollback(context.Background(), connect.NewRequest(&routingv1.RollbackRequest{Kind: "route", Name: "marketplace-inventory", ToVersion: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if d := rb.Msg.GetDocument(); d.GetVersion() != 3 || d.GetAction() != routingv1.Action_ACTION_UPDATED || !strings.Contains(d.GetDiff(), `-       "seq": committed.seq, "warehouse"`) {
		t.Errorf("rollback = %v", d)
	}
	v1, _, _ := srv.Store().Ledger().DocumentVersion("Route", "marketplace-inventory", 1)
	cur, _, _ := srv.Store().Ledger().Document("Route", "marketplace-inventory")
	if string(cur.GetContent()) != string(v1.GetContent()) || cur.GetComment() != "rollback to version 1" {
		t.Errorf("after rollback the route holds %q (%s), want version 1's content", cur.GetContent(), cur.GetComment())
	}
	_, err = c.Rollback(context.Background(), connect.NewRequest(&routingv1.RollbackRequest{Kind: "route", Name: "marketplace-inventory", ToVersion: 9}))
	wantCode(t, err, connect.CodeNotFound, "has no version 9")
	_, err = c.GetHistory(context.Background(), connect.NewRequest(&routingv1.GetHistoryRequest{Kind: "route", Name: "nope"}))
	wantCode(t, err, connect.CodeNotFound, `no route "nope"`)

	// Test a stored route on an event: the payload, without delivering.
	tr, err := c.TestRoute(context.Background(), connect.NewRequest(&routingv1.TestRouteRequest{Route: "marketplace-inventory", EventJson: levelJSON}))
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Msg.GetMatched() || tr.Msg.GetError() != "" || tr.Msg.GetRouteVersion() != 3 ||
		!strings.HasPrefix(tr.Msg.GetPayloadJson(), `{"quantity":15,"seq":0,"sku":"ABC-7","updated_at":"2026-03-01T07:59:00Z"}`) {
		t.Errorf("test route = %v", tr.Msg)
	}

	// The output of `crossdock events ls -o json` works as the event file: its first event.
	listing := `{"events": [{"seq": "5", "committedAt": "2026-03-01T08:00:00Z", "agent": "erp-east", "event": ` + levelJSON + `}], "lastSeq": "9"}`
	tr, err = c.TestRoute(context.Background(), connect.NewRequest(&routingv1.TestRouteRequest{Route: "marketplace-inventory", EventJson: listing}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tr.Msg.GetPayloadJson(), `"seq":5,`) {
		t.Errorf("test route on an events listing = %v", tr.Msg)
	}

	// A cost-limit breach: routes test shows the same error the engine dead-letters.
	costly := `apiVersion: crossdock.io/v1
kind: Route
metadata: {name: costly}
spec:
  match: {types: [inventory.level]}
  mapping: '[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e)))))'
  destination: marketplace
`
	tr, err = c.TestRoute(context.Background(), connect.NewRequest(&routingv1.TestRouteRequest{Route: "costly", EventJson: levelJSON, RouteYaml: costly}))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := routing.ParseOne([]byte(costly))
	r, _ := routing.NewRoute(d, 0)
	_, _, evalErr := r.Evaluate(mustCommitted(t, levelJSON))
	if !errors.Is(evalErr, routing.ErrCostLimit) || tr.Msg.GetError() != evalErr.Error() || tr.Msg.GetStage() != "mapping" {
		t.Errorf("routes test error %q (stage %s), engine error %v", tr.Msg.GetError(), tr.Msg.GetStage(), evalErr)
	}
	_, err = c.TestRoute(context.Background(), connect.NewRequest(&routingv1.TestRouteRequest{Route: "marketplace-inventory", EventJson: `{"type": "inventory.level"}`}))
	wantCode(t, err, connect.CodeInvalidArgument, "event: invalid event")

	// Delete: refused while referenced; a deleted route keeps its history and comes back
	// by rollback.
	_, err = c.DeleteDocument(context.Background(), connect.NewRequest(&routingv1.DeleteDocumentRequest{Kind: "destination", Name: "marketplace"}))
	wantCode(t, err, connect.CodeFailedPrecondition, `destinations/marketplace is still in use; change or delete these first:
routes/marketplace-inventory: spec.destination: no destination "marketplace"`)
	del, err := c.DeleteDocument(context.Background(), connect.NewRequest(&routingv1.DeleteDocumentRequest{Kind: "route", Name: "marketplace-inventory"}))
	if err != nil {
		t.Fatal(err)
	}
	if d := del.Msg.GetDocument(); d.GetAction() != routingv1.Action_ACTION_DELETED || d.GetVersion() != 4 || !strings.Contains(d.GetDiff(), "- kind: Route") {
		t.Errorf("delete = %v", d)
	}
	if n := listNames(t, c, "route"); len(n) != 0 {
		t.Errorf("routes after delete = %v", n)
	}
	_, err = c.DeleteDocument(context.Background(), connect.NewRequest(&routingv1.DeleteDocumentRequest{Kind: "route", Name: "marketplace-inventory"}))
	wantCode(t, err, connect.CodeNotFound, `no route "marketplace-inventory"`)
	_, err = c.Rollback(context.Background(), connect.NewRequest(&routingv1.RollbackRequest{Kind: "route", Name: "marketplace-inventory", ToVersion: 4}))
	wantCode(t, err, connect.CodeFailedPrecondition, "version 4 of route \"marketplace-inventory\" is a deletion")
	rb, err = c.Rollback(context.Background(), connect.NewRequest(&routingv1.RollbackRequest{Kind: "route", Name: "marketplace-inventory", ToVersion: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if d := rb.Msg.GetDocument(); d.GetAction() != routingv1.Action_ACTION_CREATED || d.GetVersion() != 5 {
		t.Errorf("rollback after delete = %v", d)
	}
	if n := listNames(t, c, "route"); len(n) != 1 {
		t.Errorf("routes after restoring = %v", n)
	}

	// Every call needs the admin token.
	cfg, _ := cliconfig.Load(srv.AdminConfigPath())
	hc, base, closeFn, _ := cfg.HTTPClient()
	defer closeFn()
	hc.Transport = hc.Transport.(cliconfig.Bearer).Next
	_, err = routingv1connect.NewRoutingServiceClient(hc, base).ListDocuments(context.Background(), connect.NewRequest(&routingv1.ListDocumentsRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "admin token required")
}

func TestDocumentsSurviveLeaderChange(t *testing.T) {
	cl := controlplanetest.TestCluster(t, 3, nil)
	path := cl.Nodes[0].AdminConfigPath()
	leader := cl.Leader()
	var follower *controlplanetest.Server
	for _, n := range cl.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	// Applied through a follower: redirected to the leader.
	if _, err := apply(t, client(t, path, follower.Addr()), readFile(t, "testdata/marketplace.yaml"), false); err != nil {
		t.Fatal(err)
	}
	cl.WaitConverged()
	for _, n := range cl.Nodes {
		if docs, err := n.Store().Ledger().Documents("Route"); err != nil || len(docs) != 1 {
			t.Fatalf("node %s holds routes %v, %v", n.Store().NodeID(), docs, err)
		}
	}

	leader.Stop()
	next := cl.WaitLeader(leader)
	c := client(t, path, next.Addr())
	controlplanetest.WaitFor(t, 30*time.Second, "new leader serves reads", func() bool {
		res, err := c.ListDocuments(context.Background(), connect.NewRequest(&routingv1.ListDocumentsRequest{}))
		return err == nil && len(res.Msg.GetDocuments()) == 3
	})
	docs, err := apply(t, c, strings.Replace(readFile(t, "testdata/marketplace.yaml"), "perSecond: 2,", "perSecond: 3,", 1), false)
	if err != nil {
		t.Fatal(err)
	}
	if docs[0].GetAction() != routingv1.Action_ACTION_UPDATED || docs[0].GetVersion() != 2 {
		t.Errorf("update on the new leader = %v", docs[0])
	}

	// The old leader comes back and catches up with the history.
	var old int
	for i, n := range cl.Nodes {
		if n == leader {
			old = i
		}
	}
	back := cl.Restart(old)
	cl.WaitConverged()
	hist, err := back.Store().Ledger().History("Policy", "marketplace-2rps")
	if err != nil || len(hist) != 2 {
		t.Fatalf("restarted node's policy history = %v, %v", hist, err)
	}
	tab, err := routing.Load(back.Store().Ledger())
	if err != nil {
		t.Fatal(err)
	}
	if p := tab.Policy("marketplace"); p.RatePerSecond != 3 {
		t.Errorf("restarted node's table policy = %+v", p)
	}
}

// mustCommitted reads an event as the API's TestRoute does.
func mustCommitted(t *testing.T, js string) *eventv1.CommittedEvent {
	t.Helper()
	ev := &eventv1.Event{}
	if err := protojson.Unmarshal([]byte(js), ev); err != nil {
		t.Fatal(err)
	}
	canonical.Normalize(ev)
	return &eventv1.CommittedEvent{Event: ev}
}
