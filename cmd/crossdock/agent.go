package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/config"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/internal/labels"
	"github.com/crossdock/crossdock/internal/platform/metrics"
	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/plugins/builtin"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1/agentv1connect"
)

func newAgentCmd() *cobra.Command {
	var cfg agent.Config
	var quota, memLimit, cfgFile string
	var labelArgs []string
	var noSupervisor bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent beside the ERP (and inspect it: agent status)",
		Long: `Run an agent. The first start needs --enroll-token (from 'crossdock token create'):
the agent checks the control plane against the CA pinned in the token, gets a client
certificate, and from then on connects with mutual TLS only.

--config FILE reads the agent's settings and its connectors from a YAML file
(docs/connectors.md); flags and CROSSDOCK_* variables given explicitly override it.

On Linux the agent runs as a small supervisor process and the agent itself as its
child, so that 'crossdock agents upgrade' can swap the binary and roll back by itself
(docs/fleet.md); the executable's directory must then be writable by the agent's user.
--no-supervisor runs it in one process, and upgrades are refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if cfgFile != "" {
				if err := applyAgentFile(cmd, cfgFile, &cfg, &quota, &memLimit); err != nil {
					return err
				}
			}
			if cfg.Labels, err = labels.Parse(labelArgs...); err != nil {
				return fmt.Errorf("--label: %w", err)
			}
			cfg.Builtins = func(name string) bool { _, ok := builtin.Lookup(name); return ok }
			q, err := parseBytes(quota)
			if err != nil {
				return fmt.Errorf("--quota: %w", err)
			}
			cfg.QuotaBytes = q
			if err := applyMemoryLimit(memLimit); err != nil {
				return err
			}
			worker := os.Getenv(envAgentWorker)
			if supervised && worker == "" && !noSupervisor {
				return superviseAgent(cfg.DataDir, os.Args[1:])
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var upgrading atomic.Bool
			if worker != "" {
				setupWorker(&cfg, worker, cancel, &upgrading)
			}
			applyFaultHooks(&cfg)
			stopTracing, err := tracing.Setup(cmd.Context(), "crossdock-agent", version, slog.Default())
			if err != nil {
				return err
			}
			defer flushTracing(stopTracing)
			a, err := agent.New(ctx, cfg)
			if err != nil {
				return err
			}
			if worker != "" && os.Getenv(envAgentTrial) != "" {
				go markConnected(ctx, a, worker)
			}
			slog.Info("agent started", "agent", a.ID(), "local_api", a.LocalAddr(), "servers", cfg.Servers, "version", version, "metrics", a.MetricsAddr())
			if os.Getenv("NOTIFY_SOCKET") != "" { // systemd Type=notify: READY=1 once /readyz would say so
				go metrics.NotifyWhenReady(cmd.Context(), a.Ready, 500*time.Millisecond, slog.Default())
				defer metrics.NotifyStopping()
			}
			if err := a.Run(ctx); err != nil {
				return err
			}
			if upgrading.Load() {
				return &exitError{code: exitUpgrade} // the supervisor swaps the binary
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("CROSSDOCK_AGENT_DATA_DIR", "crossdock-agent"), "data directory (identity, outbox)")
	f.StringSliceVar(&cfg.Servers, "server", splitEnv("CROSSDOCK_SERVERS"), "control plane address host:port (repeatable; env CROSSDOCK_SERVERS, comma-separated)")
	f.StringVar(&cfg.EnrollToken, "enroll-token", envOr("CROSSDOCK_ENROLL_TOKEN", ""), "single-use enrollment token, needed on first start only")
	f.StringVar(&cfg.Name, "name", "", "agent id to ask for at enrollment")
	f.StringVar(&cfg.LocalAddr, "local-addr", "127.0.0.1:7480", "local API address ('-' disables it)")
	f.BoolVar(&cfg.DisableQUIC, "no-quic", false, "use HTTP/2 over TCP only")
	f.DurationVar(&cfg.HTTP3Retry, "http3-retry", 2*time.Minute, "while on HTTP/2 (HTTP/3 failed at connect), try HTTP/3 again this often")
	f.StringVar(&quota, "quota", "1GiB", "outbox disk quota for pending events (e.g. 500MiB, 2GiB)")
	f.StringVar(&memLimit, "memory-limit", "40MiB", "soft Go memory limit; the GC works harder near it (GOMEMLIMIT overrides; 0 disables)")
	f.IntVar(&cfg.BatchMaxEvents, "batch", 500, "events per uplink batch")
	f.IntVar(&cfg.Window, "window", 8, "uplink batches in flight")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "plain-HTTP address for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9465 (no token; default: off)")
	f.StringSliceVar(&labelArgs, "label", splitEnv("CROSSDOCK_AGENT_LABELS"), "label given at enrollment, KEY=VALUE (repeatable; env CROSSDOCK_AGENT_LABELS, comma-separated); AgentConfig documents select agents by them")
	f.StringVar(&cfgFile, "config", envOr("CROSSDOCK_AGENT_CONFIG", ""), "agent config file (YAML): agent settings and connectors (env CROSSDOCK_AGENT_CONFIG)")
	f.BoolVar(&noSupervisor, "no-supervisor", false, "run the agent in one process, without the supervisor that upgrades it (upgrades are then refused)")
	cmd.AddCommand(newAgentStatusCmd(), newAgentRepairCmd())
	return cmd
}

func splitEnv(name string) []string {
	v := envOr(name, "")
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func localClient(addr string) agentv1connect.AgentServiceClient {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return agentv1connect.NewAgentServiceClient(http.DefaultClient, addr)
}

func newAgentStatusCmd() *cobra.Command {
	var local string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a local agent's uplink, transport, outbox and connectors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := localClient(local).GetStatus(cmd.Context(), connect.NewRequest(&agentv1.GetStatusRequest{}))
			if err != nil {
				return fmt.Errorf("ask the agent at %s: %w", local, err)
			}
			st := res.Msg.GetStatus()
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), st)
			}
			w := cmd.OutOrStdout()
			ob := st.GetOutbox()
			fmt.Fprintf(w, "agent:      %s\n", st.GetAgentId())
			fmt.Fprintf(w, "uplink:     %s", st.GetUplinkState())
			if st.GetTransport() != "" {
				fmt.Fprintf(w, " via %s to %s since %s", st.GetTransport(), st.GetServer(), fmtTime(st.GetConnectedSince()))
			}
			fmt.Fprintln(w)
			if st.GetLastError() != "" {
				fmt.Fprintf(w, "last error: %s\n", st.GetLastError())
			}
			if st.GetRefused() != "" {
				fmt.Fprintf(w, "REFUSED:    %s\n", st.GetRefused())
			}
			fmt.Fprintf(w, "committed:  seq %d\n", st.GetCommittedSeq())
			fmt.Fprintf(w, "cert:       expires %s (renewed over the uplink when a third of its lifetime is left)\n", fmtTime(st.GetCertNotAfter()))
			if st.GetConflicts() > 0 {
				fmt.Fprintf(w, "conflicts:  %d events not committed: their id was committed before with other content\n", st.GetConflicts())
				for _, c := range st.GetRecentConflicts() {
					fmt.Fprintf(w, "  %s  id %s  connector %s  position %s  seq %d: %s\n", fmtTime(c.GetAt()), c.GetId(), c.GetConnector(), c.GetPosition(), c.GetSeq(), c.GetDiffers())
				}
			}
			fmt.Fprintf(w, "outbox:     %d events, %d of %d bytes pending, last seq %d\n", ob.GetPendingEvents(), ob.GetPendingBytes(), ob.GetQuotaBytes(), ob.GetLastSeq())
			if ob.GetBlocked() {
				fmt.Fprintf(w, "BLOCKED:    %s\n", ob.GetBlockedReason())
			}
			if len(st.GetConnectors()) > 0 {
				fmt.Fprintln(w, "connectors:")
				return printConnectors(w, st.GetConnectors())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&local, "agent", envOr("CROSSDOCK_AGENT_ADDR", "127.0.0.1:7480"), "agent local API address")
	return cmd
}

// applyMemoryLimit sets the Go soft memory limit unless GOMEMLIMIT is set. Draining a
// large backlog makes Badger compact many deletes; with the default GC the heap then
// overshoots, with a limit it stays small at little cost (docs/performance.md).
func applyMemoryLimit(s string) error {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	n, err := parseBytes(s)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	if n > 0 {
		debug.SetMemoryLimit(n)
	}
	return nil
}

// parseBytes reads sizes like 1GiB, 500MiB, 64KiB or a plain byte count.
func parseBytes(s string) (int64, error) { return config.ParseBytes(s) }

// applyAgentFile reads the agent config file: its values fill what no flag (or the
// flag's environment variable) set, and its connectors become cfg.Connectors. Secrets
// are resolved here, from this process's environment and files.
func applyAgentFile(cmd *cobra.Command, path string, cfg *agent.Config, quota, memLimit *string) error {
	fc, err := config.Load(path)
	if err != nil {
		return err
	}
	f := cmd.Flags()
	unset := func(flag, env string) bool { return !f.Changed(flag) && (env == "" || os.Getenv(env) == "") }
	a := fc.Agent
	if a.Name != "" && unset("name", "") {
		cfg.Name = a.Name
	}
	if a.DataDir != "" && unset("data-dir", "CROSSDOCK_AGENT_DATA_DIR") {
		cfg.DataDir = a.DataDir
	}
	if len(a.Servers) > 0 && unset("server", "CROSSDOCK_SERVERS") {
		cfg.Servers = a.Servers
	}
	if a.EnrollToken != "" && unset("enroll-token", "CROSSDOCK_ENROLL_TOKEN") {
		cfg.EnrollToken = a.EnrollToken
	}
	if a.LocalAddr != "" && unset("local-addr", "") {
		cfg.LocalAddr = a.LocalAddr
	}
	if a.NoQUIC != nil && unset("no-quic", "") {
		cfg.DisableQUIC = *a.NoQUIC
	}
	if a.QuotaBytes > 0 && unset("quota", "") {
		*quota = strconv.FormatInt(a.QuotaBytes, 10)
	}
	if a.MemoryLimit != "" && unset("memory-limit", "") {
		*memLimit = a.MemoryLimit
	}
	if a.Batch > 0 && unset("batch", "") {
		cfg.BatchMaxEvents = a.Batch
	}
	if a.Window > 0 && unset("window", "") {
		cfg.Window = a.Window
	}
	// A file that lists connectors wins over central configuration (docs/fleet.md).
	cfg.LocalConfig = len(fc.Connectors) > 0
	for i, c := range fc.Connectors {
		if c.Builtin != "" {
			if _, ok := builtin.Lookup(c.Builtin); !ok {
				return fmt.Errorf("agent config %s: connectors[%d].builtin: no built-in connector %q (built-ins: %s)", path, i, c.Builtin, strings.Join(builtin.Names(), ", "))
			}
		}
		cfg.Connectors = append(cfg.Connectors, pluginhost.Connector{
			Name: c.Name, Builtin: c.Builtin, Path: c.Path, SHA256: c.SHA256, Settings: c.Settings,
			NoSource: c.Source != nil && !*c.Source,
		})
	}
	return nil
}
