package api

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/seal"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Secrets serves SecretsService: how stored secrets are sealed, and sealing them anew
// after a key rotation.
type Secrets struct {
	*Backend
	// Routing serializes re-sealed document writes with applies.
	Routing *Routing
	// NodeID names this node in answers.
	NodeID string
}

var _ adminv1connect.SecretsServiceHandler = (*Secrets)(nil)

// GetSecretsStatus counts the stored secrets per key they are sealed under.
func (s *Secrets) GetSecretsStatus(ctx context.Context, req *connect.Request[adminv1.GetSecretsStatusRequest]) (*connect.Response[adminv1.GetSecretsStatusResponse], error) {
	res := &adminv1.GetSecretsStatusResponse{NodeId: s.NodeID}
	held := map[string]bool{}
	if s.Keys != nil {
		res.KeyIds = s.Keys.IDs()
		for _, id := range res.KeyIds {
			held[id] = true
		}
	}
	counts := map[string]*adminv1.SecretsKeyCount{}
	count := func(v string) *adminv1.SecretsKeyCount {
		id, _ := seal.KeyID(v)
		c := counts[id]
		if c == nil {
			c = &adminv1.SecretsKeyCount{KeyId: id, Held: id != "" && held[id]}
			counts[id] = c
		}
		return c
	}
	dests, err := s.destinationSecrets()
	if err != nil {
		return nil, err
	}
	for _, d := range dests {
		count(d.Destination.Secret).Destinations++
	}
	_, keyPEM, ok, err := s.Store.Ledger().CA()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("read the CA: %w", err))
	}
	if ok {
		count(keyPEM).CaKey = true
	}
	for _, c := range counts {
		res.Sealed = append(res.Sealed, c)
	}
	sort.Slice(res.Sealed, func(i, j int) bool { return res.Sealed[i].GetKeyId() < res.Sealed[j].GetKeyId() })
	return connect.NewResponse(res), nil
}

// destinationSecrets returns the stored destinations that hold a secret value (not a
// ${env:...} reference, which is never stored).
func (s *Secrets) destinationSecrets() ([]*routing.Document, error) {
	recs, err := s.Store.Ledger().Documents(string(routing.KindDestination))
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	var out []*routing.Document
	for _, rec := range recs {
		d, err := routing.FromRecord(rec)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if d.Destination != nil && d.Destination.Secret != "" {
			out = append(out, d)
		}
	}
	return out, nil
}

// ResealSecrets seals every stored secret not sealed under the sealing key with it.
func (s *Secrets) ResealSecrets(ctx context.Context, req *connect.Request[adminv1.ResealSecretsRequest]) (*connect.Response[adminv1.ResealSecretsResponse], error) {
	if s.Keys == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node has no secrets key"))
	}
	if err := s.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	active := s.Keys.ActiveID()
	res := &adminv1.ResealSecretsResponse{KeyId: active}

	s.Routing.writeMu.Lock()
	defer s.Routing.writeMu.Unlock()
	dests, err := s.destinationSecrets()
	if err != nil {
		return nil, err
	}
	cmd := &storev1.PutDocuments{Actor: actor(req.Header()), Comment: "reseal secrets under key " + active}
	for _, d := range dests {
		if id, _ := seal.KeyID(d.Destination.Secret); id == active {
			continue
		}
		plain, err := s.Keys.OpenString(seal.PurposeDestinationSecret, d.Destination.Secret)
		if err != nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s: %w; nothing was re-sealed", d.Ref(), err))
		}
		d.Destination.Secret = s.Keys.Seal(seal.PurposeDestinationSecret, []byte(plain))
		content, err := d.Canonical()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		cmd.Documents = append(cmd.Documents, &storev1.DocumentContent{Kind: string(d.Kind), Name: d.Name(), Content: content})
		res.Destinations = append(res.Destinations, d.Name())
	}
	certPEM, keyPEM, ok, err := s.Store.Ledger().CA()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("read the CA: %w", err))
	}
	var caCmd *storev1.PutCA
	if id, _ := seal.KeyID(keyPEM); ok && id != active {
		plain, err := s.Keys.OpenString(seal.PurposeCAKey, keyPEM)
		if err != nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("the CA key: %w; nothing was re-sealed", err))
		}
		clusterID, _, err := s.Store.Ledger().ClusterID()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		caCmd = &storev1.PutCA{CertPem: certPEM, KeyPem: s.Keys.Seal(seal.PurposeCAKey, []byte(plain)), ClusterId: clusterID}
	}
	if len(cmd.Documents) > 0 {
		out, err := s.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT, cmd)
		if err != nil {
			return nil, s.storeError(err)
		}
		if r, ok := out.(*storev1.PutDocumentsResult); ok && r.GetError() != "" {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(r.GetError()))
		}
	}
	if caCmd != nil {
		out, err := s.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_CA, caCmd)
		if err != nil {
			return nil, s.storeError(err)
		}
		if e, ok := out.(error); ok && e != nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("re-seal the CA key: %w", e))
		}
		res.CaKey = true
	}
	s.Logger.Info("secrets re-sealed", "key", active, "destinations", len(res.Destinations), "ca_key", res.CaKey, "audit", true)
	return connect.NewResponse(res), nil
}
