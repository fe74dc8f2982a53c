package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/features"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/internal/seal"
	clusterv1 "github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1/clusterv1connect"
)

const (
	pkiDir = "pki"
	caName = "ca"
)

// loadOrCreateCA returns the cluster CA from <data-dir>/pki. A new node gets it by
// joining (Join set) or, bootstrapping a cluster, creates it.
func (s *Server) loadOrCreateCA(ctx context.Context, raftAdv string) (*pki.CA, error) {
	dir := filepath.Join(s.cfg.DataDir, pkiDir)
	certPEM, keyPEM, err := pki.LoadKeyPair(dir, caName)
	switch {
	case err == nil:
		plain, err := s.openCAKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("controlplane: load CA from %s: %w", dir, err)
		}
		ca, err := pki.LoadCA(certPEM, plain)
		if err != nil {
			return nil, fmt.Errorf("controlplane: load CA from %s: %w", dir, err)
		}
		if id, _ := seal.KeyID(string(keyPEM)); id != s.keys.ActiveID() {
			// Stored in clear by an older build, or under a key since rotated: seal it anew.
			if err := pki.WriteKeyPairAs(dir, caName, certPEM, plain, []byte(s.keys.Seal(seal.PurposeCAKey, plain))); err != nil {
				return nil, fmt.Errorf("controlplane: re-seal the CA key: %w", err)
			}
		}
		return ca, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("controlplane: load CA: %w", err)
	}
	var ca *pki.CA
	switch {
	case len(s.cfg.Join) > 0:
		res, err := s.join(ctx, raftAdv)
		if err != nil {
			return nil, err
		}
		if err := s.adoptJoinKeys([]byte(res.GetSecretsKeys())); err != nil {
			return nil, err
		}
		plain, err := s.openCAKey([]byte(res.GetCaKeyPem()))
		if err != nil {
			return nil, fmt.Errorf("controlplane: CA from the cluster: %w", err)
		}
		if ca, err = pki.LoadCA([]byte(res.GetCaCertPem()), plain); err != nil {
			return nil, fmt.Errorf("controlplane: CA from the cluster: %w", err)
		}
		s.joined, s.joinIndex = true, res.GetIndex()
		s.logger.Info("joined cluster as non-voter", "leader", res.GetLeaderId(), "index", res.GetIndex())
	case s.cfg.Bootstrap:
		if ca, err = pki.NewCA("Crossdock cluster CA"); err != nil {
			return nil, fmt.Errorf("controlplane: create CA: %w", err)
		}
	default:
		return nil, errors.New("controlplane: this node has no cluster yet: start it with --bootstrap, or --join ADDR --join-token TOKEN")
	}
	kp, err := ca.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("controlplane: encode CA key: %w", err)
	}
	if s.keys == nil {
		return nil, errors.New("controlplane: no secrets key to seal the CA key with")
	}
	if err := pki.WriteKeyPairAs(dir, caName, ca.CertPEM(), kp, []byte(s.keys.Seal(seal.PurposeCAKey, kp))); err != nil {
		return nil, fmt.Errorf("controlplane: store CA: %w", err)
	}
	return ca, nil
}

// leaderOf returns the leader's API address carried by a "not the leader" error.
func leaderOf(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Meta().Get(protocol.LeaderHeader)
	}
	return ""
}

// join asks an existing node to add this one, following leader hints, retrying while
// the cluster has no leader.
func (s *Server) join(ctx context.Context, raftAdv string) (*clusterv1.JoinResponse, error) {
	tok, err := pki.ParseToken(s.cfg.JoinToken)
	if err != nil {
		return nil, fmt.Errorf("controlplane: --join-token: %w", err)
	}
	tr := &http.Transport{TLSClientConfig: pki.PinnedTLSConfig(tok.CAPin), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	req := &clusterv1.JoinRequest{Token: s.cfg.JoinToken, NodeId: s.cfg.NodeID, RaftAddr: raftAdv, ApiAddr: s.addr}
	deadline := time.Now().Add(2 * time.Minute)
	var lastErr error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		target := s.cfg.Join[attempt%len(s.cfg.Join)]
		for hop := 0; hop < 3 && target != ""; hop++ {
			res, err := clusterv1connect.NewClusterServiceClient(hc, "https://"+target).Join(ctx, connect.NewRequest(req))
			if err == nil {
				return res.Msg, nil
			}
			lastErr = fmt.Errorf("join via %s: %w", target, err)
			switch connect.CodeOf(err) {
			case connect.CodePermissionDenied, connect.CodeInvalidArgument:
				return nil, fmt.Errorf("controlplane: %w", lastErr)
			}
			if errors.Is(err, pki.ErrPinMismatch) {
				return nil, fmt.Errorf("controlplane: %w", lastErr)
			}
			target = leaderOf(err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("controlplane: could not join the cluster: %w", lastErr)
}

// maintain runs for the life of the node: a non-voter asks the leader to promote it
// once it has caught up, a leader keeps its own addresses registered, and node.json
// follows the cluster id when a snapshot restored into this node changed it.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var reported time.Time
	reportedLow := false
	restores := s.store.Ledger().Restores() // New recorded the identity of the state it opened
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r := s.store.Ledger().Restores(); r != restores {
			if err := s.refreshIdentity(); err != nil {
				s.logger.Warn("could not record this data dir's node identity after a restore", "err", err)
			} else {
				restores = r
			}
		}
		// A follower reports its free disk every ReportEvery, and at once when it turns
		// short of it.
		d, sampled := s.disk.Local()
		if sampled && !s.store.IsLeader() && (time.Since(reported) >= diskguard.ReportEvery || d.Low() && !reportedLow) {
			reported, reportedLow = time.Now(), d.Low()
			if err := s.reportDisk(ctx, d); err != nil {
				s.logger.Debug("could not report free disk to the leader", "err", err)
			}
		}
		if s.store.IsLeader() {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := s.registerSelf(rctx); err != nil {
				s.logger.Warn("could not register this node's addresses", "err", err)
			}
			cancel()
			continue
		}
		if s.isNonvoter() && s.store.Raft().AppliedIndex() >= s.joinIndex {
			if err := s.promote(ctx); err != nil {
				s.logger.Info("promotion to voter not done yet", "err", err)
			}
		}
	}
}

func (s *Server) isNonvoter() bool {
	cf := s.store.Raft().GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == s.cfg.NodeID {
			return srv.Suffrage == raft.Nonvoter
		}
	}
	return false
}

func (s *Server) promote(ctx context.Context) error {
	leader := s.backend.LeaderAPIAddr()
	if leader == "" {
		return errors.New("leader's API address not known yet")
	}
	conf := pki.ClientTLSConfig(&s.nodeCert, s.ca.Pool(), "")
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := clusterv1connect.NewClusterServiceClient(&http.Client{Transport: tr, Timeout: 30 * time.Second}, "https://"+leader)
	if _, err := client.Promote(ctx, connect.NewRequest(&clusterv1.PromoteRequest{AppliedIndex: s.store.Ledger().AppliedIndex()})); err != nil {
		return err
	}
	s.logger.Info("promoted to voter")
	return nil
}

// reportDisk sends this node's free disk sample d to the leader (diskguard).
func (s *Server) reportDisk(ctx context.Context, d diskguard.Status) error {
	leader := s.backend.LeaderAPIAddr()
	if leader == "" {
		return errors.New("leader's API address not known yet")
	}
	ctx, cancel := context.WithTimeout(ctx, diskguard.ReportEvery)
	defer cancel()
	client := clusterv1connect.NewClusterServiceClient(s.backend.NodeClient, "https://"+leader)
	req := &clusterv1.ReportDiskRequest{FreeBytes: d.Free, MinFreeBytes: d.Min, GuardOff: d.Off}
	if !s.cfg.ReportNoFeatures {
		req.Features = features.Build()
	}
	_, err := client.ReportDisk(ctx, connect.NewRequest(req))
	return err
}

// canListCompacted is nil when every node in the raft configuration has reported, in
// this leader's term, a build that applies a prune listing what it compacts
// (retention.Config.CanList).
func (s *Server) canListCompacted() error {
	cf := s.store.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("read the raft configuration: %w", err)
	}
	if missing := s.backend.OlderBuilds(cf.Configuration(), features.CompactListed); len(missing) > 0 {
		return fmt.Errorf("nodes %s have not reported a build that applies %s to this leader yet", strings.Join(missing, ", "), features.CompactListed)
	}
	return nil
}
