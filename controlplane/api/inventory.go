package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/partner"
	"github.com/crossdock/crossdock/controlplane/views"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// Limits of the views' admin reads.
const (
	// MaxViewSKUs is the most SKUs one GetInventory or GetPrices call asks for.
	MaxViewSKUs = 1000
	// MaxViewWait is the longest a call waits for min_seq.
	MaxViewWait = 10 * time.Second
)

// errViewsOff is the answer of a node started with --views=false.
var errViewsOff = connect.NewError(connect.CodeFailedPrecondition, errors.New("views are off on this node (crossdock server --views=false); ask another node or restart this one with --views=true"))

// waitViews checks the SKU count and waits, up to MaxViewWait, for the views to reach
// minSeq. Every node answers from its own views: no leader, no barrier.
func (a *Admin) waitViews(ctx context.Context, skus []string, minSeq uint64) error {
	if a.Views == nil {
		return errViewsOff
	}
	if len(skus) == 0 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("skus: give at least one SKU (--sku)"))
	}
	if len(skus) > MaxViewSKUs {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("skus: %d SKUs in one call; at most %d", len(skus), MaxViewSKUs))
	}
	if minSeq == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, MaxViewWait)
	defer cancel()
	if err := a.Views.WaitFor(wctx, minSeq); err != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("min_seq: this node's views did not reach seq %d in time (they are at %d, its ledger at %d); retry, or ask the leader: %w",
			minSeq, a.Views.Seq(), a.Store.Ledger().LastSeq(), err))
	}
	return nil
}

// GetInventory reads this node's inventory view.
func (a *Admin) GetInventory(ctx context.Context, req *connect.Request[adminv1.GetInventoryRequest]) (*connect.Response[adminv1.GetInventoryResponse], error) {
	if err := a.waitViews(ctx, req.Msg.GetSkus(), req.Msg.GetMinSeq()); err != nil {
		return nil, err
	}
	var locs []string
	if len(req.Msg.GetLocations()) > 0 {
		locs = req.Msg.GetLocations()
	}
	seq := a.Views.Seq()
	out := &adminv1.GetInventoryResponse{ViewsSeq: seq}
	levels := a.Views.Levels
	if name := req.Msg.GetAsPartner(); name != "" {
		p, ok, err := (&partner.Directory{Ledger: a.Store.Ledger()}).Get(name)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("read partner %q: %w", name, err))
		}
		if !ok {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no partner %q (crossdock partners ls lists them)", name))
		}
		levels = func(skus, locs []string) []views.Level { return partner.Sees(p.Spec, a.Views, skus, locs) }
	}
	for _, l := range levels(req.Msg.GetSkus(), locs) {
		out.Levels = append(out.Levels, &adminv1.InventoryLevel{
			Sku: l.SKU, Location: l.Location, OnHand: l.OnHand, Allocated: l.Allocated, Available: l.Available,
			UnitOfMeasure: l.UnitOfMeasure, Seq: l.Seq, CommittedAt: timestamppb.New(l.At),
		})
	}
	// The levels may be newer than seq read before them, never older.
	return connect.NewResponse(out), nil
}

// GetPrices reads this node's price view: the price valid now per (sku, price list).
func (a *Admin) GetPrices(ctx context.Context, req *connect.Request[adminv1.GetPricesRequest]) (*connect.Response[adminv1.GetPricesResponse], error) {
	if req.Msg.GetPriceList() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("price_list: give the price list (--price-list)"))
	}
	if err := a.waitViews(ctx, req.Msg.GetSkus(), req.Msg.GetMinSeq()); err != nil {
		return nil, err
	}
	out := &adminv1.GetPricesResponse{ViewsSeq: a.Views.Seq()}
	for _, p := range a.Views.Prices(req.Msg.GetSkus(), req.Msg.GetPriceList()) {
		e := &adminv1.PriceEntry{Sku: p.SKU, PriceList: p.PriceList, Currency: p.Currency, Amount: p.Amount, Seq: p.Seq, CommittedAt: timestamppb.New(p.At)}
		if !p.ValidFrom.IsZero() {
			e.ValidFrom = timestamppb.New(p.ValidFrom)
		}
		if !p.ValidTo.IsZero() {
			e.ValidTo = timestamppb.New(p.ValidTo)
		}
		out.Prices = append(out.Prices, e)
	}
	return connect.NewResponse(out), nil
}

// GetViewsStatus says how far this node's views are and how far they trail its ledger.
func (a *Admin) GetViewsStatus(ctx context.Context, req *connect.Request[adminv1.GetViewsStatusRequest]) (*connect.Response[adminv1.GetViewsStatusResponse], error) {
	out := &adminv1.GetViewsStatusResponse{LedgerSeq: a.Store.Ledger().LastSeq()}
	if a.Views == nil {
		return connect.NewResponse(out), nil
	}
	st := a.Views.Stats()
	out.Enabled = true
	out.ViewsSeq = st.Seq
	out.Levels, out.Prices, out.Items = uint64(st.Levels), uint64(st.Prices), uint64(st.Items)
	out.LagSamples = uint64(st.LagSamples)
	out.LagP50, out.LagP99, out.LagMax = durationpb.New(st.LagP50), durationpb.New(st.LagP99), durationpb.New(st.LagMax)
	out.Rebuild, out.RebuildEvents = durationpb.New(st.Rebuild), st.RebuildEvents
	return connect.NewResponse(out), nil
}
