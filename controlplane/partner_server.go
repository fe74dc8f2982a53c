package controlplane

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/partner"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// mountPartner puts the partner API (behind its gate), the operators' partner admin
// API, the internal forwarding service and the OpenAPI document on mux.
func (s *Server) mountPartner(mux *http.ServeMux, opts []connect.HandlerOption, auth *api.AdminAuth) {
	l := s.store.Ledger()
	dir := &partner.Directory{Ledger: l}
	conf := pki.ClientTLSConfig(&s.nodeCert, s.ca.Pool(), "")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	prop := &partner.Proposer{Store: s.store, Client: client}
	quota := &partner.Quota{
		Node: s.cfg.NodeID, Logger: s.logger, Now: s.cfg.PartnerQuotaClock,
		Lease: func(ctx context.Context, req *storev1.LeaseQuota) (*storev1.LeaseQuotaResult, error) {
			res := &storev1.LeaseQuotaResult{}
			err := prop.Propose(ctx, storev1.CommandType_COMMAND_TYPE_LEASE_QUOTA, req, res)
			return res, err
		},
		Return: func(ctx context.Context, req *storev1.ReturnQuota) error {
			return prop.Propose(ctx, storev1.CommandType_COMMAND_TYPE_RETURN_QUOTA, req, nil)
		},
	}
	usage := &partner.Usage{Node: s.cfg.NodeID}
	// The partner API reads this node's views unless the caller gave other ones; with
	// views off (--views=false) it answers unavailable.
	var pv partner.Reader = s.cfg.PartnerViews
	if pv == nil && s.views != nil {
		pv = s.views
	}
	s.partner = &partner.Server{Ledger: l, Dir: dir, Views: pv, Quota: quota, Usage: usage, Node: s.cfg.NodeID, Logger: s.logger}
	s.partnerFlush = &partner.Flusher{Usage: usage, Quota: quota, Every: s.cfg.PartnerUsageEvery, Logger: s.logger,
		Propose: func(ctx context.Context, r *storev1.RecordPartnerUsage) error {
			return prop.Propose(ctx, storev1.CommandType_COMMAND_TYPE_RECORD_PARTNER_USAGE, r, nil)
		}}
	s.mountOrders(mux, opts, auth, prop)
	mux.Handle(s.partner.Handler())
	mux.Handle(partnerv1connect.NewPartnerAdminServiceHandler(&api.PartnerAdmin{Backend: s.backend, Dir: dir}, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(partnerv1connect.NewPartnerNodeServiceHandler(&partner.NodeService{Store: s.store}, opts...))
	mux.HandleFunc(api.PartnerOpenAPIPath, api.PartnerOpenAPI)
}

// stopPartner gives this node's unused quota blocks back to the cluster (a clean
// shutdown), before the store closes. The usage flusher has flushed already.
func (s *Server) stopPartner(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	s.partner.Quota.ReturnUnused(rctx)
}

// Partner is the node's partner API server.
func (s *Server) Partner() *partner.Server { return s.partner }
