package ediview

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// Service implements EDIService over a View.
type Service struct {
	View *View
}

var _ adminv1connect.EDIServiceHandler = (*Service)(nil)

var errNoView = connect.NewError(connect.CodeUnavailable, errors.New("edi: this control plane node runs without views (--disable-views); ask another node"))

// ListInterchanges implements EDIService.
func (s *Service) ListInterchanges(_ context.Context, req *connect.Request[adminv1.ListInterchangesRequest]) (*connect.Response[adminv1.ListInterchangesResponse], error) {
	if s.View == nil {
		return nil, errNoView
	}
	m := req.Msg
	if d := m.GetDirection(); d != "" && d != "in" && d != "out" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("edi: direction must be in, out or empty"))
	}
	if n := m.GetPageSize(); n < 0 || n > 1000 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("edi: page_size must be between 0 and 1000"))
	}
	list, next, err := s.View.List(Filter{Partner: m.GetPartner(), Order: m.GetOrder(), State: m.GetState(), Direction: m.GetDirection()}, int(m.GetPageSize()), m.GetPageToken())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	now := s.View.now()
	out := &adminv1.ListInterchangesResponse{NextPageToken: next}
	for _, in := range list {
		x := &adminv1.EDIInterchange{Interchange: in.IC, State: State(in.IC, now), Seq: in.Seq}
		for _, g := range in.IC.GetGroups() {
			x.GroupStates = append(x.GroupStates, GroupState(in.IC, g, now))
		}
		out.Interchanges = append(out.Interchanges, x)
	}
	return connect.NewResponse(out), nil
}

// GetOrderEDI implements EDIService.
func (s *Service) GetOrderEDI(_ context.Context, req *connect.Request[adminv1.GetOrderEDIRequest]) (*connect.Response[adminv1.GetOrderEDIResponse], error) {
	if s.View == nil {
		return nil, errNoView
	}
	if req.Msg.GetOrder() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("edi: order is required (a Crossdock order id or a purchase order number)"))
	}
	out := &adminv1.GetOrderEDIResponse{Order: req.Msg.GetOrder()}
	for _, st := range s.View.OrderChain(req.Msg.GetOrder()) {
		out.Steps = append(out.Steps, &adminv1.EDIChainStep{Set: st.Set, Partner: st.Partner, Direction: st.Direction,
			Interchange: st.Interchange, GroupControl: st.GroupControl, SetControl: st.SetControl, PurchaseOrderNumber: st.PO,
			State: st.State, At: tsOrNil(st.At), AckAt: tsOrNil(st.AckAt), AckDue: tsOrNil(st.AckDue), File: st.File})
	}
	return connect.NewResponse(out), nil
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
