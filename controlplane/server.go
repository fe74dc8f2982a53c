// Package controlplane is the Crossdock control plane as a library: a raft-replicated
// store, the agents' uplink and the admin API, served over HTTPS on TCP (HTTP/2) and
// HTTP/3 on UDP, on the same port.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/alerts"
	"github.com/crossdock/crossdock/controlplane/api"
	"github.com/crossdock/crossdock/controlplane/archive"
	"github.com/crossdock/crossdock/controlplane/console"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/diskguard"
	"github.com/crossdock/crossdock/controlplane/ediview"
	"github.com/crossdock/crossdock/controlplane/features"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/orders"
	"github.com/crossdock/crossdock/controlplane/partner"
	"github.com/crossdock/crossdock/controlplane/retention"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/controlplane/views"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/seal"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1/clusterv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// Config configures a control plane node.
type Config struct {
	// NodeID names the node in raft; the host name when empty.
	NodeID string
	// DataDir holds raft, the ledger and admin.yaml.
	DataDir string
	// Listen is the API address, TCP (HTTP/2) and UDP (HTTP/3) on the same port.
	Listen string
	// RaftListen is the raft address.
	RaftListen string
	// Advertise is the API address given to agents and the CLI; Listen's when empty.
	Advertise string
	// TLSHosts are extra names and IPs for the server certificate.
	TLSHosts []string
	// RaftAdvertise is the raft address other nodes dial; RaftListen's when empty.
	RaftAdvertise string
	// Bootstrap forms a new single-node cluster when the data dir is empty.
	Bootstrap bool
	// Moved accepts raft and API addresses other than those the data dir's node
	// identity (node.json) records, for a node that really moved; without it such a
	// start is refused as a copied data dir.
	Moved bool
	// Join lists API addresses of existing nodes; a node with an empty data dir joins
	// their cluster with JoinToken (a server-kind token) instead of bootstrapping.
	Join      []string
	JoinToken string
	// DisableHTTP3 serves only HTTPS over TCP.
	DisableHTTP3 bool
	// CLIConfigPath, when set and no file is there yet, also receives the admin config
	// written at bootstrap (e.g. ~/.config/crossdock/config.yaml).
	CLIConfigPath string
	Logger        *slog.Logger
	// TuneStore adjusts the raft settings (tests use fast timings).
	TuneStore func(*store.Config)
	// AgentCertTTL is the lifetime of agent certificates (api.AgentCertTTL, 365 days,
	// when 0). Agents renew theirs when a third of it is left.
	AgentCertTTL time.Duration
	// MaxReleaseBytes bounds an agent binary pushed to the node (`crossdock releases
	// push`); api.DefaultMaxReleaseBytes when 0. Pushed binaries are kept in
	// <DataDir>/releases.
	MaxReleaseBytes int64
	// WebhookAllow lists the non-public addresses (loopback, private, link-local, ...)
	// webhooks may reach; only public addresses otherwise (--webhook-allow).
	WebhookAllow []netip.Prefix
	// ArchiveDir keeps the events this node prunes from its ledger (controlplane/archive);
	// <DataDir>/archive when empty. Every node archives its own copy when it applies a
	// prune.
	ArchiveDir string
	// SecretsKey is the key file sealing the secrets this node stores (webhook signing
	// secrets, the CA key: internal/seal); default "<data-dir>.secrets.key", beside the
	// data dir, never in it. Created at bootstrap, received when joining, required on
	// every other start.
	SecretsKey string
	// Archiver receives the events ledger retention removes, on every node, before they
	// are deleted; nil: this node's archive directory (ArchiveDir).
	Archiver ledger.Archiver
	// PruneInterval is how often the leader computes ledger retention and proposes a
	// prune (retention.DefaultInterval, 30s, when 0; --prune-interval).
	PruneInterval time.Duration
	// PruneStepEvents is the events one prune step removes at most
	// (retention.DefaultStepEvents when 0; --prune-step-events). The leader's value is
	// the one that counts: it is part of the PRUNE_LEDGER command every node applies.
	PruneStepEvents int
	// PruneCompactKeys is the most (type, keys) of compact types the leader follows to
	// leave out of a prune's compacted writes the keys the log holds a newer event of
	// (retention.DefaultCompactKeys when 0; negative turns it off;
	// --prune-compact-keys).
	PruneCompactKeys int
	// ReportNoFeatures makes the node report no stored-state features to the leader, as
	// a node of a build before them does (controlplane/features). Fault injection for
	// tests of a cluster upgraded one node at a time; never set in production.
	ReportNoFeatures bool
	// PartnerViews is what the partner API reads (the views package); nil answers
	// unavailable. PartnerUsageEvery is how often the node records partner usage
	// through raft (2s when 0).
	PartnerViews      partner.Reader
	PartnerUsageEvery time.Duration
	// PartnerQuotaClock is the clock partners' daily quotas and usage count UTC days by
	// (time.Now when nil). Tests set one that stays away from midnight UTC, where a
	// day's quota starts again; never set in production.
	PartnerQuotaClock func() time.Time
	// Limits bound what callers can make the node spend (body sizes, read timeouts,
	// enrollment and failed-authentication rates per source address, refusal logs);
	// zero fields take api.DefaultLimits.
	Limits api.Limits
	// DisableViews turns the views (inventory, prices, items derived from the ledger)
	// off on this node (--views=false); Server.Views is then nil.
	DisableViews bool
	// MinFreeDisk is the free disk this node keeps on its data dir's file system
	// (--min-free-disk): while any node has less, the leader refuses new events
	// (controlplane/diskguard). 0 means diskguard.DefaultMinFree; negative turns the
	// guard off. DiskFree replaces statfs (tests inject a full disk with it).
	MinFreeDisk int64
	DiskFree    func() (uint64, error)
	// MetricsListen serves /metrics, /healthz and /readyz over plain HTTP; empty disables it.
	MetricsListen string
	// MetricsListenOptional: MetricsListen is a default, not the operator's choice; if
	// its address is in use the node starts without the listener and logs a warning.
	MetricsListenOptional bool
	// AlertInterval is how often the leader evaluates the Alert documents
	// (alerts.DefaultInterval, 10s, when 0; --alert-interval).
	AlertInterval time.Duration
	// EDIAcks answers the ediAckOverdue alert condition; nil: the node's EDI view (the
	// edi.interchange events the agents' EDI connectors publish), or, with DisableViews,
	// those alerts never fire.
	EDIAcks alerts.EDIAcks
}

// Server is one running control plane node.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	store    *store.Store
	ca       *pki.CA
	tcp      net.Listener
	udp      net.PacketConn
	http     *http.Server
	h3       *http3.Server
	registry *api.Registry
	addr     string
	raftLn   net.Listener
	backend  *api.Backend
	disk     *diskguard.Guard
	// features keeps, while this node leads, the stored-state features each node's
	// build applies (from their disk reports).
	features features.Reports
	// delivery sends committed events to destinations while this node leads.
	delivery *delivery.Engine
	// keys seals and opens stored secrets (Config.SecretsKey).
	keys *seal.Keyring
	// archive keeps the events this node prunes (Config.ArchiveDir).
	archive *archive.Dir
	ahead   ledger.AheadArchiver // the archive ArchiveAhead writes to (nil: the prune archives all)
	// pruner proposes ledger retention while this node leads.
	pruner   *retention.Pruner
	nodeCert tls.Certificate
	// raftAdv is the raft address other nodes dial, as configured (a name stays a name).
	raftAdv string
	// joinIndex is the raft index this node was added at, when it joined in this run.
	joinIndex uint64
	joined    bool
	// views follow this node's ledger (nil with DisableViews).
	views *views.Views
	// The order view and how partner events are committed (orders_server.go).
	orders       *orders.View
	submitOrders partner.Submitter
	// edi is the view of EDI interchanges (controlplane/ediview; nil with DisableViews).
	edi *ediview.View
	// obs holds the metrics registry, the metrics listener and readiness (metrics.go).
	obs *observability
	// partner serves the partner API; partnerFlush records its usage through raft.
	partner      *partner.Server
	partnerFlush *partner.Flusher
	// console is the web console at /ui/ (console.go).
	console *console.Console
	// alerts evaluates the Alert documents while this node leads (alerts_wire.go).
	alerts *alerts.Evaluator
}

// AdminConfigFile is the name of the admin config written into the data dir at bootstrap.
const AdminConfigFile = "admin.yaml"

// New opens the store, creates the CA and first admin token on a fresh cluster, and
// binds the listeners. Run serves.
func New(ctx context.Context, cfg Config) (*Server, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("controlplane: node id: %w", err)
		}
		cfg.NodeID = h
	}
	if cfg.DataDir == "" {
		return nil, errors.New("controlplane: DataDir is required")
	}
	if !canonical.ValidName(cfg.NodeID) {
		return nil, fmt.Errorf("controlplane: node id %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.' (--node-id)", cfg.NodeID)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7443"
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: create data dir: %w", err)
	}
	if cfg.ArchiveDir == "" {
		cfg.ArchiveDir = filepath.Join(cfg.DataDir, "archive")
	}
	arch, err := archive.OpenDir(cfg.ArchiveDir)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	arch.Logger = logger
	// The data dir's node identity: refuse another node's data dir before anything starts.
	ident, err := readNodeIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := checkNodeID(cfg.DataDir, ident, cfg.NodeID); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, logger: logger.With("node", cfg.NodeID), registry: api.NewRegistry(), archive: arch, obs: newObservability()}

	// Bind the API port first: the server certificate and admin config name it.
	tcp, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("controlplane: listen on %s: %w", cfg.Listen, err)
	}
	s.tcp = tcp
	s.addr = cfg.Advertise
	if s.addr == "" {
		if unspecified(tcp.Addr().String()) {
			tcp.Close()
			return nil, fmt.Errorf("controlplane: --listen %s listens on every interface; give the address agents and the CLI dial with --advertise HOST:PORT", cfg.Listen)
		}
		s.addr = tcp.Addr().String()
	}
	if !cfg.DisableHTTP3 {
		udp, err := net.ListenPacket("udp", tcp.Addr().String())
		if err != nil {
			tcp.Close()
			return nil, fmt.Errorf("controlplane: listen for HTTP/3 on udp %s (or disable HTTP/3): %w", tcp.Addr(), err)
		}
		s.udp = udp
	}

	if cfg.RaftListen == "" {
		cfg.RaftListen = "127.0.0.1:7444"
	}
	s.raftLn, err = net.Listen("tcp", cfg.RaftListen)
	if err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("controlplane: raft listen on %s: %w", cfg.RaftListen, err)
	}
	raftAdv := cfg.RaftAdvertise
	if raftAdv == "" {
		if unspecified(s.raftLn.Addr().String()) {
			s.closeListeners()
			return nil, fmt.Errorf("controlplane: --raft-listen %s listens on every interface; give the address other nodes dial with --raft-advertise HOST:PORT", cfg.RaftListen)
		}
		raftAdv = s.raftLn.Addr().String()
	}
	s.raftAdv = raftAdv
	if ident != nil && (ident.RaftAddr != raftAdv || ident.APIAddr != s.addr) {
		if !cfg.Moved {
			s.closeListeners()
			return nil, errCopiedDataDir(cfg.DataDir, ident.NodeID, NodeIdentityFile, ident.RaftAddr, ident.APIAddr, raftAdv, s.addr)
		}
		s.logger.Warn("this node moved (--i-moved-this-node): starting at new addresses",
			"raft_was", ident.RaftAddr, "api_was", ident.APIAddr, "raft", raftAdv, "api", s.addr)
	}
	if s.keys, err = s.loadSecretsKey(ident); err != nil {
		s.closeListeners()
		return nil, err
	}
	s.ca, err = s.loadOrCreateCA(ctx, raftAdv)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	nodeCert, err := s.ca.IssueServer(cfg.NodeID, s.certHosts(raftAdv), 365*24*time.Hour)
	if err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("controlplane: issue node certificate: %w", err)
	}
	s.nodeCert = nodeCert
	layer, err := store.NewTLSStreamLayer(s.raftLn, raftAdv, nodeCert, s.ca.Pool())
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	// Every node archives what its ledger prunes in its own archive directory, unless
	// the caller supplied another Archiver.
	var archiver ledger.Archiver = arch
	if cfg.Archiver != nil {
		archiver = cfg.Archiver
	}
	// The pruner archives ahead of the prune into the same archive when it can say
	// what it holds.
	s.ahead, _ = archiver.(ledger.AheadArchiver)
	s.disk = diskguard.New(diskguard.Options{Node: cfg.NodeID, Dir: cfg.DataDir, MinFree: cfg.MinFreeDisk, Free: cfg.DiskFree, Logger: logger})
	_, _ = s.disk.Sample() // a node starting short of disk refuses from its first proposal
	scfg := store.Config{NodeID: cfg.NodeID, Dir: cfg.DataDir, StreamLayer: layer, Bootstrap: cfg.Bootstrap && !s.joined, Logger: logger, Archiver: archiver, OnApply: s.obs.onApply,
		Admit: s.disk.Check}
	if ident == nil && !cfg.Moved {
		// A data dir from a build before node.json: the replica's own record of this
		// node says where it ran. Only the raft address is compared: a follower's API
		// address in its record is the one it joined with and may be stale.
		scfg.CheckLedger = func(l *ledger.Ledger) error {
			rec, ok, err := l.Node(cfg.NodeID)
			if err != nil {
				return fmt.Errorf("controlplane: read this node's record: %w", err)
			}
			// The record holds the address as given at join, or resolved (the
			// bootstrapping node's, which raft recorded resolved): either matches.
			if ok && rec.GetRaftAddr() != "" && rec.GetRaftAddr() != raftAdv && rec.GetRaftAddr() != layer.Addr().String() {
				return errCopiedDataDir(cfg.DataDir, cfg.NodeID, "its record in the data dir's ledger", rec.GetRaftAddr(), rec.GetApiAddr(), raftAdv, s.addr)
			}
			return nil
		}
	}
	if cfg.TuneStore != nil {
		cfg.TuneStore(&scfg)
	}
	s.store, err = store.Open(scfg)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	if err := s.initSecrets(ctx); err != nil {
		s.store.Close()
		s.closeListeners()
		return nil, err
	}
	if err := s.recordIdentity(ident, raftAdv); err != nil {
		s.store.Close()
		s.closeListeners()
		return nil, err
	}
	if err := s.buildServers(nodeCert); err != nil {
		s.store.Close()
		s.closeListeners()
		return nil, err
	}
	if err := s.startMetrics(); err != nil {
		s.store.Close()
		s.closeListeners()
		return nil, err
	}
	return s, nil
}

// unspecified reports whether a listen address is 0.0.0.0 or [::]: not something another
// host can dial.
func unspecified(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// initSecrets waits for a leader. On a new cluster's first node it stores the CA and
// the first admin token through raft and writes admin.yaml; every leader makes sure
// its own addresses are registered, so followers can point agents to it.
func (s *Server) initSecrets(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if s.cfg.Bootstrap && !s.joined {
		if err := s.store.WaitForLeader(wctx); err != nil {
			return fmt.Errorf("controlplane: find the cluster leader: %w", err)
		}
	} else {
		// A joining node hears from the leader once it was added; nothing to wait for.
		return nil
	}
	if !s.store.IsLeader() {
		return nil // an existing cluster with another leader: it holds the CA already
	}
	if err := s.store.WaitForLeadership(wctx); err != nil {
		return fmt.Errorf("controlplane: leadership: %w", err)
	}
	l := s.store.Ledger()
	certPEM, _, ok, err := l.CA()
	if err != nil {
		return fmt.Errorf("controlplane: read CA: %w", err)
	}
	if ok && certPEM != string(s.ca.CertPEM()) {
		return errors.New("controlplane: the CA in pki/ differs from the cluster's CA in raft; restore pki/ from this cluster")
	}
	if !ok {
		kp, err := s.ca.KeyPEM()
		if err != nil {
			return fmt.Errorf("controlplane: encode CA key: %w", err)
		}
		if _, err := s.store.Propose(wctx, storev1.CommandType_COMMAND_TYPE_PUT_CA, &storev1.PutCA{
			CertPem: string(s.ca.CertPEM()), KeyPem: s.keys.Seal(seal.PurposeCAKey, kp), ClusterId: ledger.ClusterIDOf(string(s.ca.CertPEM())),
		}); err != nil {
			return fmt.Errorf("controlplane: store CA: %w", err)
		}
		id, secret, full, err := pki.NewAdminToken()
		if err != nil {
			return fmt.Errorf("controlplane: create admin token: %w", err)
		}
		if _, err := s.store.Propose(wctx, storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_TOKEN, &storev1.PutAdminToken{
			Id: id, SecretSha256: pki.HashSecret(secret), CreatedAt: timestamppb.Now(),
		}); err != nil {
			return fmt.Errorf("controlplane: store admin token: %w", err)
		}
		cc := &cliconfig.Config{Addr: s.addr, Token: full, CAPEM: string(s.ca.CertPEM()), ClusterID: ledger.ClusterIDOf(string(s.ca.CertPEM()))}
		path := s.AdminConfigPath()
		if err := cliconfig.Write(path, cc); err != nil {
			return err
		}
		s.logger.Info("bootstrapped cluster: CA and admin token created", "admin_config", path, "ca_pin", s.ca.Pin())
		if p := s.cfg.CLIConfigPath; p != "" {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				if err := cliconfig.Write(p, cc); err != nil {
					return err
				}
				s.logger.Info("wrote CLI config", "path", p)
			} else if err == nil {
				s.warnOtherCLIConfig(p, cc)
			}
		}
	}
	return s.registerSelf(wctx)
}

// warnOtherCLIConfig says that the CLI config at path was left alone at bootstrap, and
// whether it points at another cluster: the CLI would keep dialling that one.
func (s *Server) warnOtherCLIConfig(path string, cc *cliconfig.Config) {
	old, err := cliconfig.Load(path)
	if err != nil {
		s.logger.Warn("left the existing CLI config alone; it cannot be read", "path", path, "err", err, "admin_config", s.AdminConfigPath())
		return
	}
	if old.CAPEM == cc.CAPEM {
		return
	}
	s.logger.Warn("left the existing CLI config alone: it points at another cluster, so the CLI will not reach this one with it; "+
		"use this cluster's admin config (CROSSDOCK_CONFIG=<admin_config>) or copy it over the CLI config",
		"path", path, "its_nodes", old.Servers(), "its_cluster_id", ledger.ClusterIDOf(old.CAPEM),
		"cluster_id", cc.ClusterID, "admin_config", s.AdminConfigPath())
}

// recordIdentity writes the data dir's node.json when it is missing or out of date
// (the first start, a start with --i-moved-this-node, or the first start after a
// forced restore changed the cluster id). The cluster id is the replicated state's,
// or, before this node has it (a node that just joined), its CA's.
func (s *Server) recordIdentity(old *NodeIdentity, raftAdv string) error {
	clusterID, ok, err := s.store.Ledger().ClusterID()
	if err != nil {
		return fmt.Errorf("controlplane: read the cluster id: %w", err)
	}
	if !ok {
		clusterID = ledger.ClusterIDOf(string(s.ca.CertPEM()))
	}
	id := &NodeIdentity{NodeID: s.cfg.NodeID, ClusterID: clusterID, RaftAddr: raftAdv, APIAddr: s.addr, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if old != nil {
		id.CreatedAt = old.CreatedAt
		if *old == *id {
			return nil
		}
	}
	if err := writeNodeIdentity(s.cfg.DataDir, id); err != nil {
		return err
	}
	s.logger.Info("recorded this data dir's node identity", "file", filepath.Join(s.cfg.DataDir, NodeIdentityFile), "cluster_id", clusterID)
	return nil
}

// refreshIdentity records the cluster id in node.json again after a snapshot was
// restored into this node while it ran: a forced restore of another cluster's backup
// that reached this node after it started (it was stopped or behind when the leader
// installed it), or the first snapshot a joining node receives.
func (s *Server) refreshIdentity() error {
	old, err := readNodeIdentity(s.cfg.DataDir)
	if err != nil {
		return err
	}
	return s.recordIdentity(old, s.raftAdv)
}

// registerSelf records this node's addresses through raft if they are not yet known.
func (s *Server) registerSelf(ctx context.Context) error {
	if s.cfg.Moved {
		if err := s.fixOwnRaftAddr(ctx); err != nil {
			return err
		}
	}
	n, ok, err := s.store.Ledger().Node(s.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("controlplane: read node record: %w", err)
	}
	if ok && n.GetApiAddr() == s.addr && n.GetRaftAddr() == s.store.RaftAddr() {
		return nil
	}
	_, err = s.store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_NODE, &storev1.PutNode{
		Id: s.cfg.NodeID, ApiAddr: s.addr, RaftAddr: s.store.RaftAddr(), JoinedAt: timestamppb.Now(),
	})
	if err != nil {
		return fmt.Errorf("controlplane: register node: %w", err)
	}
	return nil
}

// fixOwnRaftAddr updates this leader's address in the raft configuration when it
// differs from the one it runs at, for a node started with --i-moved-this-node: raft
// keeps the address a server was added with.
func (s *Server) fixOwnRaftAddr(ctx context.Context) error {
	r := s.store.Raft()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("controlplane: read raft configuration: %w", err)
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) != s.cfg.NodeID || srv.Suffrage != raft.Voter ||
			string(srv.Address) == s.store.RaftAddr() || string(srv.Address) == s.raftAdv {
			continue
		}
		if err := r.AddVoter(srv.ID, raft.ServerAddress(s.store.RaftAddr()), cf.Index(), timeoutOf(ctx)).Error(); err != nil {
			return fmt.Errorf("controlplane: update this node's raft address from %s to %s: %w", srv.Address, s.store.RaftAddr(), err)
		}
		s.logger.Warn("updated this node's raft address in the raft configuration", "was", srv.Address, "now", s.store.RaftAddr())
	}
	return nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 10 * time.Second
}

// certHosts are the names and addresses the node certificate covers.
func (s *Server) certHosts(raftAdv string) []string {
	var hosts []string
	for _, a := range []string{s.addr, s.tcp.Addr().String(), raftAdv} {
		if h, _, err := net.SplitHostPort(a); err == nil {
			hosts = append(hosts, h)
		}
	}
	return append(hosts, s.cfg.TLSHosts...)
}

func (s *Server) buildServers(cert tls.Certificate) error {
	tlsConf := pki.ServerTLSConfig(cert, s.ca.Pool())

	if !s.cfg.DisableViews {
		s.views = views.New(views.LedgerSource{L: s.store.Ledger()}, views.Options{Logger: s.logger})
		s.edi = ediview.New(views.LedgerSource{L: s.store.Ledger(), Types: ediview.Types}, s.logger)
	}
	s.backend = &api.Backend{Store: s.store, CA: func() *pki.CA { return s.ca }, Keys: s.keys, Registry: s.registry, Logger: s.logger, AgentCertTTL: s.cfg.AgentCertTTL,
		ReleaseDir: filepath.Join(s.cfg.DataDir, "releases"), MaxReleaseBytes: s.cfg.MaxReleaseBytes,
		// Releases are copied between nodes with their node certificates.
		NodeClient: &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLSConfig(&s.nodeCert, s.ca.Pool(), ""), ForceAttemptHTTP2: true}},
		Disk:       s.disk, Features: &s.features}
	mux := http.NewServeMux()
	// The guard checks credentials before any handler reads a body; authenticated calls
	// keep the large message limit.
	guard := api.NewGuard(s.store.Ledger(), s.cfg.Limits, s.logger)
	limits := guard.Limits()
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(int(limits.MaxBodyBytes))}
	backend := s.backend
	mux.Handle(uplinkv1connect.NewUplinkServiceHandler(&api.Uplink{Backend: backend}, append(opts, connect.WithCodec(api.UplinkCodec{}))...))
	auth := &api.AdminAuth{Ledger: s.store.Ledger(), Propose: s.store.Propose, Logger: s.logger}
	guard.SetAdminAuth(auth)
	tmp := filepath.Join(s.cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("controlplane: create tmp dir: %w", err)
	}
	mux.Handle(clusterv1connect.NewClusterServiceHandler(&api.Cluster{Backend: backend}, opts...))
	admin := &api.Admin{Backend: backend, TempDir: tmp, Archive: api.ArchiveBackend{Dir: s.archive}, Views: s.views}
	mux.Handle(adminv1connect.NewAdminServiceHandler(admin, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(adminv1connect.NewEDIServiceHandler(&ediview.Service{View: s.edi}, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(adminv1connect.NewFleetServiceHandler(&api.Fleet{Backend: backend, Admin: admin}, append(opts, connect.WithInterceptors(auth))...)) // fleet
	mux.Handle(adminv1connect.NewAccessServiceHandler(&api.Access{Backend: backend}, append(opts, connect.WithInterceptors(auth))...))             // fleet: roles, audit
	webhooks, err := delivery.NewAddressPolicy(s.cfg.WebhookAllow)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if len(s.cfg.WebhookAllow) > 0 {
		s.logger.Info("webhooks may reach these non-public addresses (--webhook-allow)", "allow", fmt.Sprint(s.cfg.WebhookAllow))
	}
	routingAPI := &api.Routing{Backend: backend, Webhooks: webhooks}
	mux.Handle(routingv1connect.NewRoutingServiceHandler(routingAPI, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(adminv1connect.NewSecretsServiceHandler(&api.Secrets{Backend: backend, Routing: routingAPI, NodeID: s.cfg.NodeID}, append(opts, connect.WithInterceptors(auth))...))
	s.newAlerts(mux, opts, auth, webhooks)
	s.delivery = delivery.New(delivery.Config{Store: s.store, Plans: &delivery.RoutingPlans{Source: s.store.Ledger(), Keys: s.keys}, AgentSink: &s.backend.Sinks, Logger: s.logger, AddressPolicy: webhooks, OnAttempt: s.onAttempt})
	admin.Archive.Engine = s.delivery
	s.pruner = retention.New(retention.Config{Store: s.store, Plans: &delivery.RoutingPlans{Source: s.store.Ledger(), Keys: s.keys}, Interval: s.cfg.PruneInterval, StepEvents: s.cfg.PruneStepEvents, CompactKeys: s.cfg.PruneCompactKeys, CanList: s.canListCompacted, Logger: s.logger, Archiver: s.ahead})
	mux.Handle(deliveryv1connect.NewDeliveryServiceHandler(&api.Delivery{Backend: backend, Engine: s.delivery}, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(adminv1connect.NewTimelineServiceHandler(&api.Timeline{Backend: backend, Engine: s.delivery}, append(opts, connect.WithInterceptors(auth))...))
	mux.Handle(deliveryv1connect.NewPartnerServiceHandler(&api.Partner{Backend: backend, Engine: s.delivery,
		KeyAllows: func(auth, dest string) bool { return s.partner.StreamAllowed(auth, dest) }}, opts...))
	s.mountPartner(mux, opts, auth)
	if err := s.mountConsole(mux, guard); err != nil {
		return err
	}
	handler := s.withHealth(api.WithPeer(guard.Wrap(mux)))

	// No ReadTimeout: it would cut uplink streams and snapshot uploads. Bodies read
	// before authentication get a deadline from the guard instead.
	s.http = &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		IdleTimeout:       limits.IdleTimeout,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: limits.MaxConcurrentStreams},
		ErrorLog:          guard.ErrorLog(),
	}
	if s.udp != nil {
		s.h3 = &http3.Server{
			Handler:     handler,
			TLSConfig:   http3.ConfigureTLSConfig(tlsConf.Clone()),
			IdleTimeout: limits.IdleTimeout,
			QUICConfig: &quic.Config{
				MaxIdleTimeout: 10 * time.Second, KeepAlivePeriod: 3 * time.Second,
				HandshakeIdleTimeout: limits.ReadHeaderTimeout,
				MaxIncomingStreams:   int64(limits.MaxConcurrentStreams),
			},
		}
	}
	return nil
}

func (s *Server) closeListeners() {
	if s.tcp != nil {
		s.tcp.Close()
	}
	if s.raftLn != nil {
		s.raftLn.Close()
	}
	if s.udp != nil {
		s.udp.Close()
	}
}

// Run serves until ctx is done, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() {
		errc <- s.http.ServeTLS(s.tcp, "", "")
	}()
	if s.h3 != nil {
		go func() { errc <- s.h3.Serve(s.udp) }()
	}
	s.logger.Info("control plane serving", "addr", s.addr, "http3", s.h3 != nil, "raft", s.store.RaftAddr())
	go s.maintain(ctx)
	diskDone := make(chan struct{})
	go func() { defer close(diskDone); s.disk.Run(ctx) }()
	defer func() { <-diskDone }()
	// The views follow the ledger until the store closes.
	vctx, stopViews := context.WithCancel(context.WithoutCancel(ctx))
	viewsDone := make(chan struct{})
	go func() {
		defer close(viewsDone)
		var wg sync.WaitGroup
		s.runOrders(vctx, &wg)
		if s.edi != nil {
			ediDone := make(chan struct{})
			go func() { defer close(ediDone); _ = s.edi.Run(vctx) }()
			defer func() { <-ediDone }()
		}
		if s.views != nil {
			_ = s.views.Run(vctx)
		}
		wg.Wait()
	}()
	pctx, stopPartnerFlush := context.WithCancel(context.WithoutCancel(ctx))
	partnerDone := make(chan struct{})
	go func() { defer close(partnerDone); s.partnerFlush.Run(pctx) }()
	// The delivery engine stops (and commits its cursors) before the store closes.
	dctx, stopDelivery := context.WithCancel(context.WithoutCancel(ctx))
	deliveryDone := make(chan struct{})
	go func() { defer close(deliveryDone); _ = s.delivery.Run(dctx) }()
	pruneDone := make(chan struct{})
	go func() { defer close(pruneDone); _ = s.pruner.Run(dctx) }()
	alertsDone := s.runAlerts(dctx)
	rolloutsDone := make(chan struct{})
	go func() { defer close(rolloutsDone); s.backend.RunRollouts(dctx) }() // agent upgrades
	releasesDone := make(chan struct{})
	go func() { defer close(releasesDone); s.backend.SyncReleases(dctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("controlplane: serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.h3 != nil {
		s.h3.Close()
	}
	_ = s.http.Shutdown(sctx)
	s.http.Close()
	// The raft listener belongs to the store's transport now: store.Close closes it
	// after raft has shut down (closing it first makes raft log accept errors).
	if s.udp != nil {
		s.udp.Close()
	}
	stopDelivery()
	<-deliveryDone
	stopViews()
	<-viewsDone
	<-pruneDone
	<-alertsDone
	<-rolloutsDone
	<-releasesDone
	s.stopMetrics()
	s.stopPartner(ctx)
	stopPartnerFlush() // a last usage report
	<-partnerDone
	return errors.Join(err, s.store.Close())
}

// Addr is the API address agents and the CLI dial (host:port).
func (s *Server) Addr() string { return s.addr }

// Archive is this node's archive of pruned events (the ledger's Archiver hook).
func (s *Server) Archive() *archive.Dir { return s.archive }

// AdminConfigPath is where the bootstrap admin config is written.
func (s *Server) AdminConfigPath() string { return filepath.Join(s.cfg.DataDir, AdminConfigFile) }

// Pruner is the node's ledger retention (it proposes prunes while the node leads).
func (s *Server) Pruner() *retention.Pruner { return s.pruner }

// Store is the node's replicated store.
func (s *Server) Store() *store.Store { return s.store }

// Views is this node's views of the ledger (inventory, prices, items), or nil when
// they are off (Config.DisableViews).
func (s *Server) Views() views.Reader {
	if s.views == nil {
		return nil
	}
	return s.views
}

// ViewsState is Views with the counters and lag (Stats) and state comparison
// (views.Equal) the tests and benchmarks use; nil when the views are off.
func (s *Server) ViewsState() *views.Views { return s.views }

// CA is the cluster CA.
func (s *Server) CA() *pki.CA { return s.ca }

// EDI returns the node's view of EDI interchanges (nil when the views are off).
func (s *Server) EDI() *ediview.View { return s.edi }
