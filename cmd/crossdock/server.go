package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/retention"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/platform/metrics"
	"github.com/crossdock/crossdock/internal/tracing"
)

func newServerCmd() *cobra.Command {
	var cfg controlplane.Config
	var writeCLI bool
	var webhookAllow []string
	var viewsOn bool
	var pprofListen, memLimit, maxRelease string
	var raftTune store.Config
	var snapshotRate, minFreeDisk, trailingBytes, snapshotBytes string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control plane node",
		Long: `Run a control plane node. The first start with an empty --data-dir bootstraps a new
cluster: it creates the cluster CA and an admin token, and writes both to
<data-dir>/admin.yaml (and to ~/.config/crossdock/config.yaml when that does not exist).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			privateFiles()
			allow, err := delivery.ParseAllowList(webhookAllow)
			if err != nil {
				return err
			}
			cfg.WebhookAllow = allow
			cfg.DisableViews = !viewsOn
			cfg.MetricsListenOptional = !cmd.Flags().Changed("metrics-listen")
			if err := applyMemoryLimit(memLimit); err != nil {
				return err
			}
			if cfg.MaxReleaseBytes, err = parseBytes(maxRelease); err != nil || cfg.MaxReleaseBytes <= 0 {
				return fmt.Errorf("--max-release-size %q: a size like 512MiB", maxRelease)
			}
			if cfg.MinFreeDisk, err = parseBytes(minFreeDisk); err != nil || cfg.MinFreeDisk < 0 {
				return fmt.Errorf("--min-free-disk %q: a size like 1GiB, or 0 to turn the disk guard off", minFreeDisk)
			}
			if cfg.MinFreeDisk == 0 {
				cfg.MinFreeDisk = -1 // the guard's "off"
			}
			if cfg.PruneStepEvents < 1 || cfg.PruneStepEvents > retention.MaxStepEvents {
				return fmt.Errorf("--prune-step-events %d: between 1 and %d", cfg.PruneStepEvents, retention.MaxStepEvents)
			}
			if cfg.PruneCompactKeys < 0 {
				return fmt.Errorf("--prune-compact-keys %d: a count of keys, or 0 to turn following off", cfg.PruneCompactKeys)
			}
			if cfg.PruneCompactKeys == 0 {
				cfg.PruneCompactKeys = -1 // retention's "off"
			}
			snapRate, err := parseBytes(snapshotRate)
			if err != nil || snapRate < 0 {
				return fmt.Errorf("--raft-snapshot-rate %q: bytes a second like 16MiB, or 0 for no limit", snapshotRate)
			}
			if snapRate == 0 {
				snapRate = -1 // the store's "as fast as it can"
			}
			trailingB, err := parseLogBound("raft-trailing-bytes", trailingBytes)
			if err != nil {
				return err
			}
			snapshotB, err := parseLogBound("raft-snapshot-bytes", snapshotBytes)
			if err != nil {
				return err
			}
			// The store's settings reach it through TuneStore, so controlplane.Config
			// needs no field per flag (0 keeps the store's defaults).
			cfg.TuneStore = func(sc *store.Config) {
				sc.SnapshotThreshold, sc.SnapshotInterval, sc.TrailingLogs = raftTune.SnapshotThreshold, raftTune.SnapshotInterval, raftTune.TrailingLogs
				sc.MaxAppendEntries = raftTune.MaxAppendEntries
				sc.SnapshotRate = snapRate
				sc.TrailingBytes, sc.SnapshotBytes = trailingB, snapshotB
				sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout = raftTune.HeartbeatTimeout, raftTune.ElectionTimeout, raftTune.LeaderLeaseTimeout
			}
			if pprofListen != "" {
				if _, err := servePprof(cmd.Context(), pprofListen, slog.Default()); err != nil {
					return err
				}
			}
			if writeCLI {
				cfg.CLIConfigPath = cliconfig.DefaultPath()
			}
			stopTracing, err := tracing.Setup(cmd.Context(), "crossdock-server", version, slog.Default())
			if err != nil {
				return err
			}
			defer flushTracing(stopTracing)
			srv, err := controlplane.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			banner := []any{"addr", srv.Addr(), "node", srv.Store().NodeID(), "version", version, "metrics", srv.MetricsAddr()}
			if _, err := os.Stat(srv.AdminConfigPath()); err == nil {
				banner = append(banner, "admin_config", srv.AdminConfigPath())
			}
			slog.Info("server started", banner...)
			if os.Getenv("NOTIFY_SOCKET") != "" { // systemd Type=notify: READY=1 once /readyz would say so
				go metrics.NotifyWhenReady(cmd.Context(), srv.Ready, 500*time.Millisecond, slog.Default())
				defer metrics.NotifyStopping()
			}
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("CROSSDOCK_DATA_DIR", "crossdock-server"), "data directory (raft log, ledger, admin.yaml)")
	f.StringVar(&cfg.NodeID, "node-id", "", "raft node id (default: host name)")
	f.StringVar(&cfg.SecretsKey, "secrets-key", "", "the key file sealing the secrets this node stores (webhook secrets, the CA key), kept outside the data dir (default: <data-dir>.secrets.key); created at bootstrap, received when joining")
	f.StringVar(&cfg.ArchiveDir, "archive-dir", "", "where this node archives the events it prunes from its ledger (default: <data-dir>/archive); every node keeps its own copy")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:7443", "API address: HTTPS on TCP and HTTP/3 on UDP, same port")
	f.StringVar(&cfg.RaftListen, "raft-listen", "127.0.0.1:7444", "raft address")
	f.StringVar(&cfg.Advertise, "advertise", "", "API address agents and the CLI use (default: --listen)")
	f.StringSliceVar(&cfg.TLSHosts, "tls-san", nil, "extra DNS names or IPs for the server certificate")
	f.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "raft address other nodes dial (default: --raft-listen)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", true, "form a new single-node cluster when the data dir is empty (ignored with --join)")
	f.StringSliceVar(&cfg.Join, "join", nil, "API address of an existing node to join (repeatable); needs --join-token")
	f.StringVar(&cfg.JoinToken, "join-token", envOr("CROSSDOCK_JOIN_TOKEN", ""), "server-kind token from 'crossdock token create --kind server' (first start only)")
	f.BoolVar(&cfg.DisableHTTP3, "no-http3", false, "serve only HTTPS over TCP (no QUIC)")
	f.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", 365*24*time.Hour, "lifetime of agent certificates; agents renew theirs over the uplink when a third is left")
	f.StringArrayVar(&webhookAllow, "webhook-allow", nil, "CIDR (or IP) of non-public addresses webhooks may reach, e.g. 10.20.0.0/16 or 127.0.0.1/32 (repeatable; default: public addresses only)")
	f.BoolVar(&cfg.Moved, "i-moved-this-node", false, "accept raft and API addresses other than those in <data-dir>/node.json: this node moved and its old copy is gone for good")
	f.Float64Var(&cfg.Limits.EnrollPerSecond, "enroll-rate", 1, "agent enrollments and node joins allowed per second from one source address, after --enroll-burst (negative: no limit)")
	f.IntVar(&cfg.Limits.EnrollBurst, "enroll-burst", 20, "agent enrollments and node joins one source address may make at once")
	f.BoolVar(&viewsOn, "views", true, "keep the views (inventory, prices, items) derived from the ledger on this node: 'crossdock inventory get' and 'crossdock prices get' read them")
	f.DurationVar(&cfg.PruneInterval, "prune-interval", 30*time.Second, "how often the leader applies ledger retention (the Retention document, docs/operations.md)")
	f.IntVar(&cfg.PruneStepEvents, "prune-step-events", retention.DefaultStepEvents, "events one prune step removes at most: applying a step holds up the commits behind it on every node, so smaller steps lower the commit latency under pruning, at more raft rounds per prune (docs/operations.md, Retention)")
	f.IntVar(&cfg.PruneCompactKeys, "prune-compact-keys", retention.DefaultCompactKeys, "the most (type, keys) of compact types the leader follows, 35-56 bytes each, so a prune writes no compacted record for a key the log holds a newer event of (0: off; docs/operations.md, Retention)")
	f.DurationVar(&cfg.AlertInterval, "alert-interval", 10*time.Second, "how often the leader evaluates the Alert documents (docs/observability.md)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "127.0.0.1:9464", "plain-HTTP address for /metrics, /healthz and /readyz (no token; keep it on loopback or a private network; '' disables; when left at the default and the port is taken, the node starts without it and logs a warning)")
	f.BoolVar(&writeCLI, "write-cli-config", true, "at bootstrap, also write the admin config to ~/.config/crossdock/config.yaml if absent")
	f.StringVar(&pprofListen, "pprof-listen", "", "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060; unauthenticated, off when empty")
	f.StringVar(&maxRelease, "max-release-size", "512MiB", "largest agent binary 'crossdock releases push' may upload to this node (kept in <data-dir>/releases)")
	f.StringVar(&minFreeDisk, "min-free-disk", "1GiB", "free disk this node keeps on its data dir's file system: while any node has less, the cluster refuses new events (agents keep them in their outboxes) until retention or an operator frees disk; 0 turns the guard off")
	// --ledger-cache sized the ledger's block cache, which is gone (controlplane/ledger,
	// tableCompression): still accepted so that existing unit files start, with a warning.
	f.String("ledger-cache", "", "ignored: the ledger reads its tables from the page cache")
	_ = f.MarkDeprecated("ledger-cache", "the ledger has no block cache any more: it reads its tables from the page cache, which needs no setting (docs/operations.md); the flag is ignored")
	f.StringVar(&memLimit, "memory-limit", "1GiB", "soft Go memory limit: near it the GC works harder instead of letting freed memory pile up (GOMEMLIMIT overrides; 0 disables)")
	f.Uint64Var(&raftTune.SnapshotThreshold, "raft-snapshot-threshold", store.DefaultSnapshotThreshold, "raft log entries after which a snapshot of the whole ledger is taken")
	f.DurationVar(&raftTune.SnapshotInterval, "raft-snapshot-interval", store.DefaultSnapshotInterval, "how often raft checks whether a snapshot is due")
	f.Uint64Var(&raftTune.TrailingLogs, "raft-trailing-logs", store.DefaultTrailingLogs, "raft log entries kept after a snapshot, so a follower that was behind by up to this many catches up without a snapshot")
	f.StringVar(&trailingBytes, "raft-trailing-bytes", "256MiB", "at most this much of the raft log is kept after a snapshot: --raft-trailing-logs is lowered to the newest entries that fit, not below 64 (0: entries only)")
	f.StringVar(&snapshotBytes, "raft-snapshot-bytes", "512MiB", "raft log written since the last snapshot that makes the next one due, whatever the entry count (0: entries only); once the log holds twice --raft-trailing-bytes + this, a running snapshot is no longer rate limited")
	f.StringVar(&snapshotRate, "raft-snapshot-rate", "16MiB", "how fast a raft snapshot reads the ledger, bytes a second before compression (0: no limit); spreads the snapshot's CPU over time instead of taking cores from commits ('crossdock snapshot save' is not limited)")
	f.IntVar(&raftTune.MaxAppendEntries, "raft-max-append-entries", store.DefaultMaxAppendEntries, "raft log entries grouped into one disk write and one AppendEntries (1 to 1024); bounds raft-wal's write buffer")
	f.DurationVar(&raftTune.HeartbeatTimeout, "raft-heartbeat-timeout", time.Second, "a follower without contact from the leader this long starts an election")
	f.DurationVar(&raftTune.ElectionTimeout, "raft-election-timeout", time.Second, "a candidate without a result this long starts another election")
	f.DurationVar(&raftTune.LeaderLeaseTimeout, "raft-leader-lease-timeout", 500*time.Millisecond, "a leader without contact from a quorum this long steps down (at most --raft-heartbeat-timeout)")
	return cmd
}

// parseLogBound reads a raft log byte bound flag for store.Config: 0 (entries only)
// becomes the store's -1, as its 0 means the default.
func parseLogBound(name, v string) (int64, error) {
	n, err := parseBytes(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--%s %q: a size like 256MiB, or 0 to bound the raft log in entries only", name, v)
	}
	if n == 0 {
		return -1, nil
	}
	return n, nil
}
