package orders

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// Admin serves OrderAdminService from a node's order view.
type Admin struct {
	View   *View
	Ledger *ledger.Ledger
}

var _ adminv1connect.OrderAdminServiceHandler = (*Admin)(nil)

func summary(o *Order) *adminv1.OrderSummary {
	return &adminv1.OrderSummary{
		OrderId: o.ID, Partner: o.Partner, PurchaseOrderNumber: o.PurchaseOrderNumber, Status: o.Status,
		ErpOrderNumber: o.ERPOrderNumber, Message: o.Message, SubmittedAt: timestamppb.New(o.SubmittedAt),
		UpdatedAt: timestamppb.New(o.UpdatedAt), Seq: o.Seq, LastSeq: o.LastSeq, Lines: int32(len(o.Event.GetOrder().GetLines())),
		NotifiedStatus: o.Notified,
	}
}

// ListOrders lists orders, newest first.
func (a *Admin) ListOrders(_ context.Context, req *connect.Request[adminv1.ListOrdersRequest]) (*connect.Response[adminv1.ListOrdersResponse], error) {
	m := req.Msg
	f := Filter{Partner: m.GetPartner(), Status: m.GetStatus(), Limit: int(m.GetLimit())}
	if f.Status != "" && !slices.Contains(Statuses, f.Status) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("status %q is not one of %v", f.Status, Statuses))
	}
	if f.Limit < 0 || f.Limit > 1000 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("limit %d is outside 0 to 1000", f.Limit))
	}
	if t := m.GetPageToken(); t != "" {
		n, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("page_token: not a token from a ListOrders answer"))
		}
		f.Before = n
	}
	list, next := a.View.List(f)
	res := &adminv1.ListOrdersResponse{Seq: a.View.Seq()}
	for _, o := range list {
		res.Orders = append(res.Orders, summary(o))
	}
	if next > 0 {
		res.NextPageToken = strconv.FormatUint(next, 10)
	}
	return connect.NewResponse(res), nil
}

// stepName is the timeline's name of a step's event type.
var stepName = map[string]string{
	"order.ack": "erp_answer", "shipment": "shipment", "invoice": "invoice", "order.cancel": "cancel", "sales.return": "return", "order": "order_again",
}

// DescribeOrder shows an order's timeline: submitted (when the node received it, for
// orders from the partner API), committed (raft commit, with the ledger seq),
// delivered (each destination a route sends the order to whose delivery cursor passed
// the order's seq: the cursor's seq and time), then every step (ERP answer, shipments,
// invoice, cancellation, return) and every order.status event, in seq order.
func (a *Admin) DescribeOrder(_ context.Context, req *connect.Request[adminv1.DescribeOrderRequest]) (*connect.Response[adminv1.DescribeOrderResponse], error) {
	id := req.Msg.GetOrderId()
	o := a.View.Get(id)
	if o == nil {
		o = a.View.ByERPNumber(id)
	}
	if o == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no order %q on this node (the order view is at seq %d); crossdock orders ls lists them", id, a.View.Seq()))
	}
	res := &adminv1.DescribeOrderResponse{Order: summary(o), Event: o.Event}
	tl := &res.Timeline
	if at := o.Event.GetOccurredAt(); at != nil {
		// The partner API stamps when it received the call; a connector (EDI, an ERP)
		// gives the order's own date.
		detail := "received by the partner API"
		if src := o.Event.GetSource(); !strings.HasPrefix(src.GetAgent(), "partner:") {
			detail = fmt.Sprintf("the order's date, as captured by agent %s, connector %s", src.GetAgent(), src.GetConnector())
		}
		*tl = append(*tl, &adminv1.TimelineEntry{Step: "submitted", EventType: "order", At: at, Detail: detail})
	}
	first := o.Steps[0]
	*tl = append(*tl, &adminv1.TimelineEntry{Step: "committed", EventType: "order", Status: first.Status, At: timestamppb.New(first.At), Seq: first.Seq, Detail: first.Detail})
	if a.Ledger != nil {
		if t, err := routing.Load(a.Ledger); err == nil {
			for _, r := range t.Routes() {
				if !r.Matches(o.Event) {
					continue
				}
				for _, d := range r.Destinations {
					c, ok, err := a.Ledger.DeliveryCursor(d)
					detail := fmt.Sprintf("route %s to %s: not delivered yet", r.Name, d)
					e := &adminv1.TimelineEntry{Step: "delivered", EventType: "order"}
					if err == nil && ok && c.GetSeq() > o.Seq {
						detail = fmt.Sprintf("route %s to %s: the destination's cursor passed the order (at seq %d by %s)", r.Name, d, c.GetSeq(), c.GetUpdatedAt().AsTime().UTC().Format("2006-01-02T15:04:05.000Z"))
						e.Seq, e.At = c.GetSeq(), c.GetUpdatedAt()
					}
					e.Detail = detail
					*tl = append(*tl, e)
				}
			}
		}
	}
	steps := append(slices.Clone(o.Steps[1:]), o.Notices...)
	slices.SortStableFunc(steps, func(x, y Step) int {
		switch {
		case x.Seq < y.Seq:
			return -1
		case x.Seq > y.Seq:
			return 1
		}
		return 0
	})
	for _, s := range steps {
		name, status := stepName[s.Type], s.Status
		if s.Type == "order.status" {
			name, status = "notified", ""
		}
		if name == "" {
			name = s.Type
		}
		*tl = append(*tl, &adminv1.TimelineEntry{Step: name, EventType: s.Type, Status: status, At: timestamppb.New(s.At), Seq: s.Seq, Detail: s.Detail})
	}
	return connect.NewResponse(res), nil
}
