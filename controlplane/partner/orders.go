package partner

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/orders"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/tracing"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Orders: SubmitOrder commits an `order` event (id canonical.OrderEventID, key order =
// canonical.OrderID) through raft as an event of the partner's pseudo-agent
// (ledger.PartnerAgent), so the ledger's id dedup makes a second submission of the same
// order a duplicate and another order under the same purchase order number a conflict.
// The order view (controlplane/orders) answers the reads and, since it holds every order
// for as long as the ledger keeps it (two years by default), also recognises a
// resubmission after the dedup window.
//
// A partner only ever sees its own orders: an order of another partner is "not found",
// exactly as an order that does not exist.

// Submitter commits a partner's events through raft (COMMAND_TYPE_SUBMIT_PARTNER_EVENTS).
type Submitter func(ctx context.Context, partner string, events []*eventv1.Event) (*storev1.IngestResult, error)

// OrderConnector is the connector name of events the partner API commits.
const OrderConnector = "partner-api"

// Field limits of order calls.
const (
	maxPOLength     = 128
	maxNotesLength  = 4096
	maxReasonLength = 1024
	maxTextLength   = 256
)

// itemLookup is implemented by *views.Views: the order's SKUs are checked against it.
type itemLookup interface {
	Item(sku string) (ItemEntry, bool)
}

func (s *Server) orderView(ctx context.Context, minSeq uint64) (*orders.View, error) {
	if s.Orders == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the order view is not available on this node yet; retry shortly"))
	}
	if minSeq > 0 && s.Orders.Seq() < minSeq {
		wait := s.MinSeqWait
		if wait <= 0 {
			wait = minSeqMaxWait
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := s.Orders.WaitFor(wctx, minSeq); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the order view on this node reflects seq %d, not yet min_seq %d; retry", s.Orders.Seq(), minSeq))
		}
	}
	return s.Orders, nil
}

// SubmitOrder validates a partner's order and commits it.
func (s *Server) SubmitOrder(ctx context.Context, req *connect.Request[partnerv1.SubmitOrderRequest]) (*connect.Response[partnerv1.SubmitOrderResponse], error) {
	c := callFrom(ctx)
	var v violations
	var ev *eventv1.Event
	if c != nil && s.Views != nil {
		v = s.validateOrder(req.Msg, c.partner)
		if len(v) == 0 {
			ev = orderEvent(c.partner.Name, req.Msg)
			ev.OccurredAt = timestamppb.New(s.now()) // when it was submitted (not part of its identity)
			ev.Trace = tracing.Carry(ctx)            // the partner API call's span (nil when tracing is off)
			canonicalViolations(&v, canonical.Validate(ev))
		}
	}
	res := connect.NewResponse(&partnerv1.SubmitOrderResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	view, err := s.orderView(ctx, 0)
	if err != nil {
		return nil, err
	}
	id := canonical.OrderID(c.partner.Name, req.Msg.GetPurchaseOrderNumber())
	if o := view.Get(id); o != nil {
		return s.answerExisting(res, o, ev)
	}
	r, err := s.submit(ctx, c.partner.Name, ev)
	if err != nil {
		return nil, err
	}
	if len(r.GetConflicts()) > 0 {
		return nil, conflictError(id, r.GetConflicts()[0].GetDiffers())
	}
	if r.GetCommitted() == 1 {
		res.Msg.OrderId, res.Msg.Status, res.Msg.Seq = id, orders.StatusReceived, r.GetLastLedgerSeq()
		s.logger().Info("partner order committed", "partner", c.partner.Name, "order", id, "seq", r.GetLastLedgerSeq())
		return res, nil
	}
	// A duplicate the view does not show yet: it is at or below the last seq.
	if err := waitView(ctx, view, r.GetLastLedgerSeq()); err != nil {
		return nil, err
	}
	if o := view.Get(id); o != nil {
		return s.answerExisting(res, o, ev)
	}
	// The ledger still knows the id but no longer holds the order (retention removed it
	// within the dedup window): it was submitted before.
	res.Msg.OrderId, res.Msg.Status, res.Msg.Duplicate = id, orders.StatusReceived, true
	return res, nil
}

func waitView(ctx context.Context, view *orders.View, seq uint64) error {
	wctx, cancel := context.WithTimeout(ctx, minSeqMaxWait)
	defer cancel()
	if err := view.WaitFor(wctx, seq); err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the order is committed but the order view on this node is behind (%w); retry", err))
	}
	return nil
}

// answerExisting answers a submission of an order the view holds: the same order is a
// duplicate, another one a conflict.
func (s *Server) answerExisting(res *connect.Response[partnerv1.SubmitOrderResponse], o *orders.Order, ev *eventv1.Event) (*connect.Response[partnerv1.SubmitOrderResponse], error) {
	if d := canonical.Differs(o.Event, ev); d != "" {
		return nil, conflictError(o.ID, d)
	}
	res.Msg.OrderId, res.Msg.Status, res.Msg.Seq, res.Msg.Duplicate = o.ID, o.Status, o.Seq, true
	return res, nil
}

// conflictError is AlreadyExists: another order was submitted under the same purchase
// order number.
func conflictError(id, differs string) error {
	e := connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
		"purchase_order_number: another order was submitted under this purchase order number (order %s); it differs in %s. Send the same order to read its id, or use a new purchase order number", id, differs))
	violationDetail(e, "purchase_order_number", "already used by order "+id)
	return e
}

func (s *Server) submit(ctx context.Context, partner string, events ...*eventv1.Event) (*storev1.IngestResult, error) {
	if s.Submit == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("this node cannot commit partner orders; retry on another node"))
	}
	r, err := s.Submit(ctx, partner, events)
	if errors.Is(err, diskguard.ErrLow) || connect.CodeOf(err) == connect.CodeResourceExhausted {
		// Refused before raft saw it: nothing was committed.
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("not committed: %s; send the same request again later", refusalReason(err)))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("commit through raft: %w; the outcome is unknown: send the same request again (it is idempotent)", err))
	}
	if r.GetError() != "" {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("the ledger refused the commit: %s", r.GetError()))
	}
	return r, nil
}

// refusalReason is why a command was refused before raft: the disk guard's reason, from this
// node or from the leader a follower forwarded to.
func refusalReason(err error) string {
	var low *diskguard.LowError
	if errors.As(err, &low) {
		return low.Error()
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// orderEvent is the ledger event of a valid SubmitOrder request.
func orderEvent(partner string, m *partnerv1.SubmitOrderRequest) *eventv1.Event {
	po := m.GetPurchaseOrderNumber()
	id := canonical.OrderID(partner, po)
	o := &eventv1.Order{
		OrderNumber: id, Partner: partner, PurchaseOrderNumber: po, Channel: "partner-api", Customer: partner,
		OrderDate: m.GetOrderDate(), RequestedShipDate: m.GetRequestedShipDate(), RequestedDeliveryDate: m.GetRequestedDeliveryDate(),
		ShipTo: party(m.GetShipTo()), BillTo: party(m.GetBillTo()), Currency: m.GetCurrency(), Notes: m.GetNotes(),
		FulfillmentLocation: m.GetLocation(),
	}
	for i, l := range m.GetLines() {
		n := l.GetLineNumber()
		if n == "" {
			n = strconv.Itoa(i + 1)
		}
		o.Lines = append(o.Lines, &eventv1.OrderLine{
			LineNumber: n, Sku: l.GetSku(), Quantity: l.GetQuantity(), UnitOfMeasure: l.GetUnitOfMeasure(), UnitPrice: l.GetUnitPrice(),
			PartnerItemId: l.GetPartnerItemId(), Gtin: l.GetGtin(), Description: l.GetDescription(),
		})
	}
	return &eventv1.Event{
		Id: canonical.OrderEventID(partner, po), Type: canonical.TypeOrder,
		Keys:    map[string]string{"order": id},
		Source:  &eventv1.Source{Agent: ledger.PartnerAgent(partner), Connector: OrderConnector, Position: po},
		Payload: &eventv1.Event_Order{Order: o},
	}
}

func party(p *partnerv1.Party) *eventv1.Party {
	if p == nil {
		return nil
	}
	return &eventv1.Party{Name: p.GetName(), AddressLines: p.GetAddressLines(), City: p.GetCity(), Region: p.GetRegion(),
		PostalCode: p.GetPostalCode(), Country: p.GetCountry(), Gln: p.GetGln(), LocationCode: p.GetLocationCode()}
}

func partyOut(p *eventv1.Party) *partnerv1.Party {
	if p == nil {
		return nil
	}
	return &partnerv1.Party{Name: p.GetName(), AddressLines: p.GetAddressLines(), City: p.GetCity(), Region: p.GetRegion(),
		PostalCode: p.GetPostalCode(), Country: p.GetCountry(), Gln: p.GetGln(), LocationCode: p.GetLocationCode()}
}

// validText checks a free-text field: at most max bytes of UTF-8 without control
// characters (line breaks allowed when multiline).
func validText(v *violations, field, s string, max int, multiline bool) {
	if len(s) > max {
		v.add(field, "%d bytes, at most %d", len(s), max)
		return
	}
	if !utf8.ValidString(s) {
		v.add(field, "not valid UTF-8")
		return
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			v.add(field, "control character %U not allowed", r)
			return
		}
	}
}

// positive parses a positive decimal quantity.
func positive(s string) (*big.Rat, bool) {
	if !canonical.IsDecimal(s) {
		return nil, false
	}
	q, ok := new(big.Rat).SetString(s)
	if !ok || q.Sign() <= 0 {
		return nil, false
	}
	return q, true
}

// validateOrder checks a SubmitOrder request against the partner's document and the
// views; every violation names its field.
func (s *Server) validateOrder(m *partnerv1.SubmitOrderRequest, p *Partner) violations {
	var v violations
	po := m.GetPurchaseOrderNumber()
	if po == "" {
		v.add("purchase_order_number", "required")
	} else {
		validText(&v, "purchase_order_number", po, maxPOLength, false)
	}
	if n := len(m.GetLines()); n < 1 || n > p.Limits.MaxItemsPerCall {
		v.add("lines", "%d lines, want 1 to %d", n, p.Limits.MaxItemsPerCall)
	}
	validText(&v, "notes", m.GetNotes(), maxNotesLength, true)
	validText(&v, "currency", m.GetCurrency(), 3, false)
	if l := m.GetLocation(); l != "" && !p.Spec.SeesLocation(l) {
		v.add("location", "%q is not one of your locations", l)
	}
	items, _ := s.Views.(itemLookup)
	seen := map[string]int{}
	for i, l := range m.GetLines() {
		f := fmt.Sprintf("lines[%d]", i)
		n := l.GetLineNumber()
		if n == "" {
			n = strconv.Itoa(i + 1)
		} else {
			validText(&v, f+".line_number", n, 32, false)
		}
		if j, dup := seen[n]; dup {
			v.add(f+".line_number", "%q is also the number of lines[%d]", n, j)
		}
		seen[n] = i
		sku := l.GetSku()
		switch {
		case sku == "" || len(sku) > maxSKULength:
			v.add(f+".sku", "must be 1 to %d characters", maxSKULength)
		case !p.Spec.SeesSKU(sku):
			v.add(f+".sku", "%q is not one of your SKUs", sku)
		case items != nil:
			if _, ok := items.Item(sku); !ok {
				v.add(f+".sku", "unknown SKU %q (ListItems lists the SKUs you may order)", sku)
			}
		}
		q, ok := positive(l.GetQuantity())
		if !ok {
			v.add(f+".quantity", "%q is not a positive decimal number (e.g. \"2\" or \"1.5\")", l.GetQuantity())
		}
		if up := l.GetUnitPrice(); up != "" && (!canonical.IsDecimal(up) || strings.HasPrefix(up, "-")) {
			v.add(f+".unit_price", "%q is not a non-negative decimal number (e.g. \"12.50\")", up)
		}
		for name, val := range map[string]string{"unit_of_measure": l.GetUnitOfMeasure(), "partner_item_id": l.GetPartnerItemId(), "description": l.GetDescription()} {
			validText(&v, f+"."+name, val, maxTextLength, false)
		}
		if ok && p.Spec.Orders != nil && p.Spec.Orders.CheckAvailability && p.Spec.SeesSKU(sku) {
			var locs []string
			if m.GetLocation() != "" {
				locs = []string{m.GetLocation()}
			}
			avail := new(big.Rat)
			for _, lv := range Sees(p.Spec, s.Views, []string{sku}, locs) {
				if a, ok := new(big.Rat).SetString(lv.Available); ok {
					avail.Add(avail, a)
				}
			}
			if q.Cmp(avail) > 0 {
				v.add(f+".quantity", "%s ordered, %s available to you", l.GetQuantity(), avail.RatString())
			}
		}
	}
	return v
}

// canonicalViolations turns the canonical model's validation errors ("order.shipTo.
// country: ...", one per line) into violations named as the request's fields.
func canonicalViolations(v *violations, err error) {
	if err == nil {
		return
	}
	msg := strings.TrimPrefix(err.Error(), canonical.ErrInvalid.Error()+": ")
	for _, line := range strings.Split(msg, "\n") {
		field, desc, ok := strings.Cut(line, ": ")
		if !ok {
			v.add("order", "%s", line)
			continue
		}
		field = strings.TrimPrefix(field, "order.")
		field = strings.Replace(field, "fulfillmentLocation", "location", 1)
		v.add(snake(field), "%s", desc)
	}
}

// snake turns the camelCase of a protojson field path into the request's snake_case.
func snake(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsUpper(r) {
			b.WriteByte('_')
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ownOrder finds one of the calling partner's orders; another partner's order is not
// found, exactly as one that does not exist.
func ownOrder(view *orders.View, p *Partner, id, po string) (*orders.Order, error) {
	if id == "" && po != "" {
		id = canonical.OrderID(p.Name, po)
	}
	o := view.Get(id)
	if o == nil || o.Partner != p.Name {
		e := connect.NewError(connect.CodeNotFound, fmt.Errorf("order_id: no order %q among your orders", id))
		violationDetail(e, "order_id", "not found")
		return nil, e
	}
	return o, nil
}

func violationDetail(e *connect.Error, field, desc string) {
	var v violations
	v.add(field, "%s", desc)
	if len(v) > 0 {
		if d, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: v}); err == nil {
			e.AddDetail(d)
		}
	}
}

func validateOrderRef(v *violations, id, po string) {
	switch {
	case id == "" && po == "":
		v.add("order_id", "required (or purchase_order_number)")
	case id != "" && po != "":
		v.add("order_id", "give order_id or purchase_order_number, not both")
	case len(id) > maxSKULength:
		v.add("order_id", "must be 1 to %d characters", maxSKULength)
	case len(po) > maxPOLength:
		v.add("purchase_order_number", "must be 1 to %d characters", maxPOLength)
	}
}

// GetOrder answers one of the partner's orders.
func (s *Server) GetOrder(ctx context.Context, req *connect.Request[partnerv1.GetOrderRequest]) (*connect.Response[partnerv1.GetOrderResponse], error) {
	var v violations
	validateOrderRef(&v, req.Msg.GetOrderId(), req.Msg.GetPurchaseOrderNumber())
	res := connect.NewResponse(&partnerv1.GetOrderResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	view, err := s.orderView(ctx, req.Msg.GetMinSeq())
	if err != nil {
		return nil, err
	}
	res.Msg.Seq = view.Seq()
	o, err := ownOrder(view, c.partner, req.Msg.GetOrderId(), req.Msg.GetPurchaseOrderNumber())
	if err != nil {
		return nil, err
	}
	res.Msg.Order = OrderOut(o, true)
	return res, nil
}

// OrderOut is the partner API form of an order (with its lines and steps when full).
func OrderOut(o *orders.Order, full bool) *partnerv1.Order {
	ord := o.Event.GetOrder()
	out := &partnerv1.Order{
		OrderId: o.ID, PurchaseOrderNumber: o.PurchaseOrderNumber, Status: o.Status, ErpOrderNumber: o.ERPOrderNumber,
		Message: o.Message, SubmittedAt: timestamppb.New(o.SubmittedAt), UpdatedAt: timestamppb.New(o.UpdatedAt),
		Currency: ord.GetCurrency(), Location: ord.GetFulfillmentLocation(), Seq: o.LastSeq,
		OrderDate: ord.GetOrderDate(), RequestedShipDate: ord.GetRequestedShipDate(), RequestedDeliveryDate: ord.GetRequestedDeliveryDate(),
	}
	if !full {
		return out
	}
	out.ShipTo, out.BillTo, out.Notes = partyOut(ord.GetShipTo()), partyOut(ord.GetBillTo()), ord.GetNotes()
	for _, l := range ord.GetLines() {
		out.Lines = append(out.Lines, &partnerv1.OrderLine{LineNumber: l.GetLineNumber(), Sku: l.GetSku(), Quantity: l.GetQuantity(),
			UnitOfMeasure: l.GetUnitOfMeasure(), UnitPrice: l.GetUnitPrice(), PartnerItemId: l.GetPartnerItemId(), Gtin: l.GetGtin(), Description: l.GetDescription()})
	}
	for _, st := range o.Steps {
		out.Steps = append(out.Steps, &partnerv1.OrderStep{EventType: st.Type, Status: st.Status, At: timestamppb.New(st.At), Seq: st.Seq, Detail: st.Detail})
	}
	return out
}

// ListOrders pages through the partner's orders, newest first.
func (s *Server) ListOrders(ctx context.Context, req *connect.Request[partnerv1.ListOrdersRequest]) (*connect.Response[partnerv1.ListOrdersResponse], error) {
	c := callFrom(ctx)
	m := req.Msg
	var v violations
	f := orders.Filter{Status: m.GetStatus()}
	if f.Status != "" && !containsStr(orders.Statuses, f.Status) {
		v.add("status", "%q is not a status (%s)", f.Status, strings.Join(orders.Statuses, ", "))
	}
	if m.GetSince() != nil {
		f.Since = m.GetSince().AsTime()
	}
	if m.GetUntil() != nil {
		f.Until = m.GetUntil().AsTime()
	}
	if tok := m.GetPageToken(); tok != "" {
		n, err := strconv.ParseUint(tok, 10, 64)
		if err != nil || n == 0 {
			v.add("page_token", "not a page token from a ListOrders answer")
		}
		f.Before = n
	}
	if c != nil {
		f.Limit = int(m.GetPageSize())
		if f.Limit < 0 || f.Limit > c.partner.Limits.MaxItemsPerCall {
			v.add("page_size", "%d is outside 0 to %d", f.Limit, c.partner.Limits.MaxItemsPerCall)
		}
		if f.Limit <= 0 {
			f.Limit = c.partner.Limits.MaxItemsPerCall
		}
	}
	res := connect.NewResponse(&partnerv1.ListOrdersResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	view, err := s.orderView(ctx, 0)
	if err != nil {
		return nil, err
	}
	f.Partner = c.partner.Name
	res.Msg.Seq = view.Seq()
	list, next := view.List(f)
	for _, o := range list {
		res.Msg.Orders = append(res.Msg.Orders, OrderOut(o, false))
	}
	if next > 0 {
		res.Msg.NextPageToken = strconv.FormatUint(next, 10)
	}
	return res, nil
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// CancelOrder commits an order.cancel (status requested) for one of the partner's
// orders that has not shipped.
func (s *Server) CancelOrder(ctx context.Context, req *connect.Request[partnerv1.CancelOrderRequest]) (*connect.Response[partnerv1.CancelOrderResponse], error) {
	var v violations
	validateOrderRef(&v, req.Msg.GetOrderId(), "")
	validText(&v, "reason", req.Msg.GetReason(), maxReasonLength, true)
	res := connect.NewResponse(&partnerv1.CancelOrderResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	view, err := s.orderView(ctx, 0)
	if err != nil {
		return nil, err
	}
	o, err := ownOrder(view, c.partner, req.Msg.GetOrderId(), "")
	if err != nil {
		return nil, err
	}
	res.Msg.OrderId = o.ID
	switch o.Status {
	case orders.StatusCancelRequested, orders.StatusCancelled:
		res.Msg.Status, res.Msg.Seq = o.Status, o.LastSeq
		return res, nil
	case orders.StatusPartiallyShipped, orders.StatusShipped, orders.StatusInvoiced, orders.StatusReturnRequested:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("order_id: order %s is %s and can no longer be cancelled; ask for a return (RequestReturn)", o.ID, o.Status))
	case orders.StatusRejected:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("order_id: order %s was rejected by the ERP; there is nothing to cancel", o.ID))
	}
	ev := &eventv1.Event{
		Id: "order.cancel:" + o.ID, Type: canonical.TypeOrderCancel, Keys: map[string]string{"order": o.ID},
		Source: &eventv1.Source{Agent: ledger.PartnerAgent(c.partner.Name), Connector: OrderConnector, Position: "cancel:" + o.PurchaseOrderNumber},
		Payload: &eventv1.Event_OrderCancel{OrderCancel: &eventv1.OrderCancel{OrderNumber: o.ID, Partner: c.partner.Name, PurchaseOrderNumber: o.PurchaseOrderNumber,
			Status: "requested", Reason: req.Msg.GetReason(), ErpOrderNumber: o.ERPOrderNumber}},
	}
	r, err := s.submit(ctx, c.partner.Name, ev)
	if err != nil {
		return nil, err
	}
	res.Msg.Status, res.Msg.Seq = orders.StatusCancelRequested, r.GetLastLedgerSeq()
	return res, nil
}

// RequestReturn commits a sales.return (status requested) for lines of one of the
// partner's shipped orders.
func (s *Server) RequestReturn(ctx context.Context, req *connect.Request[partnerv1.RequestReturnRequest]) (*connect.Response[partnerv1.RequestReturnResponse], error) {
	c := callFrom(ctx)
	m := req.Msg
	var v violations
	validateOrderRef(&v, m.GetOrderId(), "")
	if m.GetReturnReference() == "" {
		v.add("return_reference", "required")
	} else {
		validText(&v, "return_reference", m.GetReturnReference(), maxPOLength, false)
	}
	if m.GetReason() == "" {
		v.add("reason", "required")
	} else {
		validText(&v, "reason", m.GetReason(), maxReasonLength, true)
	}
	if c != nil {
		if n := len(m.GetLines()); n < 1 || n > c.partner.Limits.MaxItemsPerCall {
			v.add("lines", "%d lines, want 1 to %d", n, c.partner.Limits.MaxItemsPerCall)
		}
	}
	for i, l := range m.GetLines() {
		if l.GetLineNumber() == "" {
			v.add(fmt.Sprintf("lines[%d].line_number", i), "required")
		}
		if _, ok := positive(l.GetQuantity()); !ok {
			v.add(fmt.Sprintf("lines[%d].quantity", i), "%q is not a positive decimal number", l.GetQuantity())
		}
	}
	res := connect.NewResponse(&partnerv1.RequestReturnResponse{})
	c, err := s.admit(ctx, res.Header(), v)
	if err != nil {
		return nil, err
	}
	view, err := s.orderView(ctx, 0)
	if err != nil {
		return nil, err
	}
	o, err := ownOrder(view, c.partner, m.GetOrderId(), "")
	if err != nil {
		return nil, err
	}
	switch o.Status {
	case orders.StatusPartiallyShipped, orders.StatusShipped, orders.StatusInvoiced, orders.StatusReturnRequested:
	default:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("order_id: order %s is %s; only shipped goods can be returned (cancel an order that has not shipped)", o.ID, o.Status))
	}
	lines := map[string]*eventv1.OrderLine{}
	for _, l := range o.Event.GetOrder().GetLines() {
		lines[l.GetLineNumber()] = l
	}
	sr := &eventv1.SalesReturn{ReturnNumber: m.GetReturnReference(), OrderNumber: o.ID, Status: "requested", Reason: m.GetReason(), Partner: c.partner.Name}
	for i, l := range m.GetLines() {
		ol := lines[l.GetLineNumber()]
		if ol == nil {
			v.add(fmt.Sprintf("lines[%d].line_number", i), "order %s has no line %q", o.ID, l.GetLineNumber())
			continue
		}
		q, _ := positive(l.GetQuantity())
		if want, ok := new(big.Rat).SetString(ol.GetQuantity()); ok && q.Cmp(want) > 0 {
			v.add(fmt.Sprintf("lines[%d].quantity", i), "%s is more than the %s ordered", l.GetQuantity(), ol.GetQuantity())
		}
		sr.Lines = append(sr.Lines, &eventv1.ShipmentLine{OrderLineNumber: ol.GetLineNumber(), Sku: ol.GetSku(), Quantity: l.GetQuantity(), UnitOfMeasure: ol.GetUnitOfMeasure()})
	}
	if err := v.err(); err != nil {
		return nil, s.refused(c, ReasonInvalid, s.now(), err)
	}
	ev := &eventv1.Event{
		Id: "sales.return:" + o.ID + ":" + m.GetReturnReference(), Type: canonical.TypeSalesReturn,
		Keys:    map[string]string{"order": o.ID, "return": m.GetReturnReference()},
		Source:  &eventv1.Source{Agent: ledger.PartnerAgent(c.partner.Name), Connector: OrderConnector, Position: "return:" + o.PurchaseOrderNumber + ":" + m.GetReturnReference()},
		Payload: &eventv1.Event_SalesReturn{SalesReturn: sr},
	}
	r, err := s.submit(ctx, c.partner.Name, ev)
	if err != nil {
		return nil, err
	}
	if len(r.GetConflicts()) > 0 {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("return_reference: another return was requested under %q for order %s; it differs in %s", m.GetReturnReference(), o.ID, r.GetConflicts()[0].GetDiffers()))
	}
	res.Msg.OrderId, res.Msg.ReturnReference, res.Msg.Status = o.ID, m.GetReturnReference(), orders.StatusReturnRequested
	res.Msg.Seq, res.Msg.Duplicate = r.GetLastLedgerSeq(), r.GetCommitted() == 0
	return res, nil
}
