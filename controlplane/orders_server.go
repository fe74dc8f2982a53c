package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"

	"github.com/crossdock/crossdock/controlplane/orders"
	"github.com/crossdock/crossdock/controlplane/partner"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// mountOrders gives the partner API the order view and a way to commit partner events
// (through raft, forwarded to the leader from a follower).
func (s *Server) mountOrders(mux *http.ServeMux, opts []connect.HandlerOption, auth *api.AdminAuth, prop *partner.Proposer) {
	s.orders = orders.New(orders.LedgerSource(s.store.Ledger()), s.logger)
	s.submitOrders = func(ctx context.Context, p string, events []*eventv1.Event) (*storev1.IngestResult, error) {
		sub := &storev1.SubmitPartnerEvents{Partner: p}
		for _, ev := range events {
			b, err := proto.Marshal(ev)
			if err != nil {
				return nil, fmt.Errorf("orders: encode event %s: %w", ev.GetId(), err)
			}
			sub.Events = append(sub.Events, b)
		}
		res := &storev1.IngestResult{}
		err := prop.Propose(ctx, storev1.CommandType_COMMAND_TYPE_SUBMIT_PARTNER_EVENTS, sub, res)
		return res, err
	}
	s.partner.Orders, s.partner.Submit = s.orders, s.submitOrders
	mux.Handle(adminv1connect.NewOrderAdminServiceHandler(&orders.Admin{View: s.orders, Ledger: s.store.Ledger()}, append(opts, connect.WithInterceptors(auth))...))
}

// runOrders follows the ledger with the order view and, on the leader, commits the
// order.status events, until ctx ends.
func (s *Server) runOrders(ctx context.Context, wg *sync.WaitGroup) {
	if s.orders == nil {
		return
	}
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.orders.Run(ctx) }()
	n := &orders.Notifier{View: s.orders, IsLeader: s.store.IsLeader, Submit: s.submitOrders, Logger: s.logger}
	go func() { defer wg.Done(); n.Run(ctx) }()
}

// Orders is this node's order view.
func (s *Server) Orders() *orders.View { return s.orders }
