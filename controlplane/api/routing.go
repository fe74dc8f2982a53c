package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/seal"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Routing serves RoutingService.
type Routing struct {
	*Backend
	// Webhooks is the address policy webhook destinations are checked against when
	// written; nil allows only public addresses.
	Webhooks *delivery.AddressPolicy

	// writeMu serializes this node's document writes, so that the consistency check of
	// an apply (every reference resolves) sees the state the write lands on. Only the
	// leader writes.
	writeMu sync.Mutex
}

var _ routingv1connect.RoutingServiceHandler = (*Routing)(nil)

// invalid maps a validation error to InvalidArgument with its field-path lines.
func invalid(err error) error {
	return connect.NewError(connect.CodeInvalidArgument, err)
}

// actor is the caller's credential name (set by AdminAuth), else its admin token id,
// for the history.
func actor(h interface{ Get(string) string }) string {
	if name := h.Get(ActorHeader); name != "" {
		return name
	}
	raw, _ := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	id, _, err := pki.ParseAdminToken(raw)
	if err != nil {
		return ""
	}
	return id
}

// stored loads the current documents, keyed by Ref.
func (r *Routing) stored() (map[string]*routing.Document, map[string]*storev1.DocumentRecord, error) {
	docs := map[string]*routing.Document{}
	recs := map[string]*storev1.DocumentRecord{}
	for _, k := range routing.Kinds {
		rs, err := r.Store.Ledger().Documents(string(k))
		if err != nil {
			return nil, nil, connect.NewError(connect.CodeInternal, err)
		}
		for _, rec := range rs {
			d, err := routing.FromRecord(rec)
			if err != nil {
				return nil, nil, connect.NewError(connect.CodeInternal, err)
			}
			docs[d.Ref()] = d
			recs[d.Ref()] = rec
		}
	}
	return docs, recs, nil
}

// plan is a validated write: the documents with their canonical content and what the
// write does to each.
type plan struct {
	docs     []*routing.Document
	contents [][]byte
	results  []*routingv1.AppliedDocument
}

// prepare validates docs against the stored documents (every reference must resolve in
// the resulting set) and computes each document's action and diff.
func (r *Routing) prepare(docs []*routing.Document) (*plan, error) {
	if err := routing.CheckWebhookTargets(docs, r.Webhooks.CheckHost); err != nil {
		return nil, invalid(err)
	}
	if err := r.sealSecrets(docs); err != nil {
		return nil, err
	}
	cur, recs, err := r.stored()
	if err != nil {
		return nil, err
	}
	merged := map[string]*routing.Document{}
	for k, d := range cur {
		merged[k] = d
	}
	for _, d := range docs {
		merged[d.Ref()] = d
	}
	all := make([]*routing.Document, 0, len(merged))
	for _, d := range merged {
		all = append(all, d)
	}
	if _, err := routing.NewTable(all, nil); err != nil {
		return nil, invalid(err)
	}
	p := &plan{docs: docs}
	for _, d := range docs {
		content, err := d.Canonical()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		masked, err := d.Masked().Canonical()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		res := &routingv1.AppliedDocument{Kind: string(d.Kind), Name: d.Name(), Action: routingv1.Action_ACTION_CREATED, Version: 1}
		if rec, ok := recs[d.Ref()]; ok {
			res.PreviousVersion, res.Version = rec.GetVersion(), rec.GetVersion()
			if string(rec.GetContent()) == string(content) {
				res.Action = routingv1.Action_ACTION_UNCHANGED
			} else {
				res.Action, res.Version = routingv1.Action_ACTION_UPDATED, rec.GetVersion()+1
				res.Diff = routing.Diff(maskedContent(rec), string(masked))
			}
		} else {
			if last, err := r.Store.Ledger().History(string(d.Kind), d.Name()); err == nil && len(last) > 0 {
				res.Version = last[len(last)-1].GetVersion() + 1 // re-created after a delete
			}
			res.Diff = routing.Diff("", string(masked))
		}
		p.contents = append(p.contents, content)
		p.results = append(p.results, res)
	}
	return p, nil
}

// write proposes the plan's changed documents and fills in the versions the FSM gave.
func (r *Routing) write(ctx context.Context, p *plan, who, comment string) error {
	cmd := &storev1.PutDocuments{Actor: who, Comment: comment}
	for i, d := range p.docs {
		if p.results[i].GetAction() != routingv1.Action_ACTION_UNCHANGED {
			cmd.Documents = append(cmd.Documents, &storev1.DocumentContent{Kind: string(d.Kind), Name: d.Name(), Content: p.contents[i]})
		}
	}
	if len(cmd.Documents) == 0 {
		return nil
	}
	out, err := r.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT, cmd)
	if err != nil {
		return r.storeError(err)
	}
	res, ok := out.(*storev1.PutDocumentsResult)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected apply result %T", out))
	}
	if res.GetError() != "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(res.GetError()))
	}
	byRef := map[string]*storev1.DocumentResult{}
	for _, dr := range res.GetResults() {
		byRef[dr.GetKind()+"/"+dr.GetName()] = dr
	}
	for _, ad := range p.results {
		if dr, ok := byRef[ad.GetKind()+"/"+ad.GetName()]; ok {
			ad.Version, ad.PreviousVersion = dr.GetVersion(), dr.GetPreviousVersion()
			if dr.GetUnchanged() {
				ad.Action, ad.Diff = routingv1.Action_ACTION_UNCHANGED, ""
			}
		}
	}
	return nil
}

func maskedContent(rec *storev1.DocumentRecord) string {
	if rec.GetDeleted() || len(rec.GetContent()) == 0 {
		return ""
	}
	d, err := routing.FromRecord(rec)
	if err != nil {
		return string(rec.GetContent()) // cannot parse: cannot hold a parsed secret either
	}
	b, err := d.Masked().Canonical()
	if err != nil {
		return ""
	}
	return string(b)
}

// ApplyDocuments creates or updates documents: all of them in one Raft entry, or none.
func (r *Routing) ApplyDocuments(ctx context.Context, req *connect.Request[routingv1.ApplyDocumentsRequest]) (*connect.Response[routingv1.ApplyDocumentsResponse], error) {
	docs, err := routing.Parse([]byte(req.Msg.GetYaml()))
	if err != nil {
		return nil, invalid(err)
	}
	if err := routing.RequireResolved(docs); err != nil {
		return nil, invalid(err)
	}
	for _, d := range docs {
		if err := requireAdminForKinds(req.Header(), d.Kind); err != nil { // access.go
			return nil, err
		}
	}
	if err := r.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	p, err := r.prepare(docs)
	if err != nil {
		return nil, err
	}
	if !req.Msg.GetDryRun() {
		if err := r.write(ctx, p, actor(req.Header()), "apply"); err != nil {
			return nil, err
		}
		for _, ad := range p.results {
			if ad.GetAction() != routingv1.Action_ACTION_UNCHANGED {
				r.Logger.Info("routing document applied", "kind", ad.GetKind(), "name", ad.GetName(), "version", ad.GetVersion(), "action", strings.ToLower(strings.TrimPrefix(ad.GetAction().String(), "ACTION_")), "audit", true)
			}
		}
	}
	return connect.NewResponse(&routingv1.ApplyDocumentsResponse{Documents: p.results, DryRun: req.Msg.GetDryRun()}), nil
}

func parseKindArg(s string) (routing.Kind, error) {
	k, ok := routing.ParseKind(s)
	if !ok {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("kind: %q is not route, destination or policy", s))
	}
	return k, nil
}

// toDocument renders a stored version for output, secrets masked.
func toDocument(rec *storev1.DocumentRecord) *routingv1.Document {
	out := &routingv1.Document{
		Kind: rec.GetKind(), Name: rec.GetName(), Version: rec.GetVersion(), Actor: rec.GetActor(),
		Comment: rec.GetComment(), Deleted: rec.GetDeleted(), Content: maskedContent(rec),
		AppliedAt: timestamppb.New(time.Unix(0, rec.GetAppliedAtUnixNano())),
	}
	if d, err := routing.FromRecord(rec); err == nil {
		out.Summary = routing.Summary(d)
	}
	return out
}

// ListDocuments lists the current documents of a kind (all kinds when empty).
func (r *Routing) ListDocuments(ctx context.Context, req *connect.Request[routingv1.ListDocumentsRequest]) (*connect.Response[routingv1.ListDocumentsResponse], error) {
	kinds := routing.Kinds
	if s := req.Msg.GetKind(); s != "" {
		k, err := parseKindArg(s)
		if err != nil {
			return nil, err
		}
		kinds = []routing.Kind{k}
	}
	if err := r.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	out := &routingv1.ListDocumentsResponse{}
	for _, k := range kinds {
		recs, err := r.Store.Ledger().Documents(string(k))
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		for _, rec := range recs {
			out.Documents = append(out.Documents, toDocument(rec))
		}
	}
	return connect.NewResponse(out), nil
}

// GetHistory lists every version of a document with the diff from the one before.
func (r *Routing) GetHistory(ctx context.Context, req *connect.Request[routingv1.GetHistoryRequest]) (*connect.Response[routingv1.GetHistoryResponse], error) {
	k, err := parseKindArg(req.Msg.GetKind())
	if err != nil {
		return nil, err
	}
	if err := r.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	hist, err := r.Store.Ledger().History(string(k), req.Msg.GetName())
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if len(hist) == 0 {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no %s %q (see crossdock %s ls)", strings.ToLower(string(k)), req.Msg.GetName(), k.Plural()))
	}
	out := &routingv1.GetHistoryResponse{}
	prev := ""
	for _, rec := range hist {
		d := toDocument(rec)
		d.Diff = routing.Diff(prev, d.GetContent())
		prev = d.GetContent()
		out.Versions = append(out.Versions, d)
	}
	return connect.NewResponse(out), nil
}

// Rollback writes an old version's content as a new version.
func (r *Routing) Rollback(ctx context.Context, req *connect.Request[routingv1.RollbackRequest]) (*connect.Response[routingv1.RollbackResponse], error) {
	k, err := parseKindArg(req.Msg.GetKind())
	if err != nil {
		return nil, err
	}
	if err := requireAdminForKinds(req.Header(), k); err != nil { // access.go
		return nil, err
	}
	name, to := req.Msg.GetName(), req.Msg.GetToVersion()
	if to == 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("to_version: required (see crossdock history)"))
	}
	if err := r.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	rec, ok, err := r.Store.Ledger().DocumentVersion(string(k), name, to)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%s %q has no version %d (see crossdock history %s %s)", strings.ToLower(string(k)), name, to, strings.ToLower(string(k)), name))
	}
	if rec.GetDeleted() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("version %d of %s %q is a deletion; roll back to a version with content", to, strings.ToLower(string(k)), name))
	}
	d, err := routing.FromRecord(rec)
	if err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("version %d no longer validates: %w", to, err))
	}
	p, err := r.prepare([]*routing.Document{d})
	if err != nil {
		return nil, err
	}
	if !req.Msg.GetDryRun() {
		if err := r.write(ctx, p, actor(req.Header()), fmt.Sprintf("rollback to version %d", to)); err != nil {
			return nil, err
		}
		r.Logger.Info("routing document rolled back", "kind", k, "name", name, "to_version", to, "version", p.results[0].GetVersion(), "audit", true)
	}
	return connect.NewResponse(&routingv1.RollbackResponse{Document: p.results[0]}), nil
}

// DeleteDocument removes a document that nothing refers to. A tombstone version keeps
// the history, so a rollback to an earlier version brings it back.
func (r *Routing) DeleteDocument(ctx context.Context, req *connect.Request[routingv1.DeleteDocumentRequest]) (*connect.Response[routingv1.DeleteDocumentResponse], error) {
	k, err := parseKindArg(req.Msg.GetKind())
	if err != nil {
		return nil, err
	}
	if err := requireAdminForKinds(req.Header(), k); err != nil { // access.go
		return nil, err
	}
	name := req.Msg.GetName()
	if err := r.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	cur, recs, err := r.stored()
	if err != nil {
		return nil, err
	}
	ref := k.Plural() + "/" + name
	rec, ok := recs[ref]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no %s %q (see crossdock %s ls)", strings.ToLower(string(k)), name, k.Plural()))
	}
	delete(cur, ref)
	rest := make([]*routing.Document, 0, len(cur))
	for _, d := range cur {
		rest = append(rest, d)
	}
	if _, err := routing.NewTable(rest, nil); err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s is still in use; change or delete these first:\n%w", ref, err))
	}
	out := &routingv1.AppliedDocument{
		Kind: string(k), Name: name, Action: routingv1.Action_ACTION_DELETED,
		PreviousVersion: rec.GetVersion(), Version: rec.GetVersion() + 1, Diff: routing.Diff(maskedContent(rec), ""),
	}
	if !req.Msg.GetDryRun() {
		res, err := r.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_DELETE_DOCUMENT, &storev1.DeleteDocuments{
			Documents: []*storev1.DocumentRef{{Kind: string(k), Name: name}}, Actor: actor(req.Header()), Comment: "delete",
		})
		if err != nil {
			return nil, r.storeError(err)
		}
		dr, ok := res.(*storev1.PutDocumentsResult)
		if !ok || dr.GetError() != "" || len(dr.GetResults()) != 1 {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("delete %s: unexpected result %v", ref, res))
		}
		out.Version = dr.GetResults()[0].GetVersion()
		r.Logger.Info("routing document deleted", "kind", k, "name", name, "version", out.Version, "audit", true)
	}
	return connect.NewResponse(&routingv1.DeleteDocumentResponse{Document: out}), nil
}

// TestRoute evaluates a stored route, or a route document from the request, on an event.
func (r *Routing) TestRoute(ctx context.Context, req *connect.Request[routingv1.TestRouteRequest]) (*connect.Response[routingv1.TestRouteResponse], error) {
	ce, err := testEvent(req.Msg)
	if err != nil {
		return nil, err
	}
	var (
		route   *routing.Route
		version uint64
	)
	if y := req.Msg.GetRouteYaml(); y != "" {
		d, err := routing.ParseOne([]byte(y))
		if err != nil {
			return nil, invalid(err)
		}
		if d.Kind != routing.KindRoute {
			return nil, invalid(fmt.Errorf("route_yaml: %s is not a Route", d.Ref()))
		}
		if route, err = routing.NewRoute(d, 0); err != nil {
			return nil, invalid(err)
		}
	} else {
		if req.Msg.GetRoute() == "" {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("route: required"))
		}
		if err := r.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		rec, ok, err := r.Store.Ledger().Document(string(routing.KindRoute), req.Msg.GetRoute())
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if !ok {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no route %q (see crossdock routes ls)", req.Msg.GetRoute()))
		}
		d, err := routing.FromRecord(rec)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		version = rec.GetVersion()
		if route, err = routing.NewRoute(d, version); err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
	}
	out := &routingv1.TestRouteResponse{Destinations: route.Destinations, RouteVersion: version}
	matched, payload, err := route.EvaluateContext(ctx, ce)
	out.Matched = matched
	var ee *routing.EvalError
	switch {
	case errors.As(err, &ee):
		out.Error, out.Stage = ee.Error(), ee.Stage
	case err != nil:
		return nil, connect.NewError(connect.CodeInternal, err)
	default:
		out.PayloadJson = string(payload)
	}
	return connect.NewResponse(out), nil
}

// testEvent reads the event of a TestRouteRequest and completes it as a publish would
// (type and keys from the payload); seq and committed_at get placeholders when absent.
func testEvent(m *routingv1.TestRouteRequest) (*eventv1.CommittedEvent, error) {
	ce := m.GetEvent()
	if js := strings.TrimSpace(m.GetEventJson()); js != "" {
		var probe map[string]json.RawMessage
		if err := json.Unmarshal([]byte(js), &probe); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event_json: not a JSON object: %w", err))
		}
		ce = &eventv1.CommittedEvent{}
		if list, ok := probe["events"]; ok {
			// The output of `crossdock events ls -o json`: test the first event.
			var evs []json.RawMessage
			if err := json.Unmarshal(list, &evs); err != nil || len(evs) == 0 {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("event_json: an events listing with no events"))
			}
			js = string(evs[0])
			probe = map[string]json.RawMessage{"event": nil}
		}
		if _, committed := probe["event"]; committed {
			if err := protojson.Unmarshal([]byte(js), ce); err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event_json: not a CommittedEvent: %w", err))
			}
		} else {
			ce.Event = &eventv1.Event{}
			if err := protojson.Unmarshal([]byte(js), ce.Event); err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event_json: not an Event: %w", err))
			}
		}
	}
	if ce.GetEvent() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("event_json or event: required"))
	}
	ce = proto.Clone(ce).(*eventv1.CommittedEvent)
	canonical.Normalize(ce.Event)
	if err := canonical.Validate(ce.Event); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event: %w", err))
	}
	if ce.CommittedAt == nil {
		ce.CommittedAt = timestamppb.Now()
	}
	return ce, nil
}

// sealSecrets seals the destination secrets of docs (internal/seal), so raft, the
// ledger and snapshots never hold them in clear. A secret given already sealed must open
// with this cluster's keys.
func (r *Routing) sealSecrets(docs []*routing.Document) error {
	for _, d := range docs {
		if d.Destination == nil || d.Destination.Secret == "" {
			continue
		}
		sec := d.Destination.Secret
		if r.Keys == nil {
			if seal.IsSealed(sec) {
				return invalid(fmt.Errorf("%s: spec.secret is sealed and this node has no secrets key", d.Ref()))
			}
			continue
		}
		if seal.IsSealed(sec) {
			if _, err := r.Keys.Open(seal.PurposeDestinationSecret, sec); err != nil {
				return invalid(fmt.Errorf("%s: spec.secret: %w", d.Ref(), err))
			}
			continue
		}
		d.Destination.Secret = r.Keys.Seal(seal.PurposeDestinationSecret, []byte(sec))
	}
	return nil
}
