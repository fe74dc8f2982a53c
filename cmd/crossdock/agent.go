package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/agent"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1/agentv1connect"
)

func newAgentCmd() *cobra.Command {
	var cfg agent.Config
	var quota, memLimit string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent beside the ERP (and inspect it: agent status)",
		Long: `Run an agent. The first start needs --enroll-token (from 'crossdock token create'):
the agent checks the control plane against the CA pinned in the token, gets a client
certificate, and from then on connects with mutual TLS only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := parseBytes(quota)
			if err != nil {
				return fmt.Errorf("--quota: %w", err)
			}
			cfg.QuotaBytes = q
			if err := applyMemoryLimit(memLimit); err != nil {
				return err
			}
			a, err := agent.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			cmd.PrintErrf("agent %s running; local API on %s\n", a.ID(), a.LocalAddr())
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", envOr("CROSSDOCK_AGENT_DATA_DIR", "crossdock-agent"), "data directory (identity, outbox)")
	f.StringSliceVar(&cfg.Servers, "server", splitEnv("CROSSDOCK_SERVERS"), "control plane address host:port (repeatable; env CROSSDOCK_SERVERS, comma-separated)")
	f.StringVar(&cfg.EnrollToken, "enroll-token", envOr("CROSSDOCK_ENROLL_TOKEN", ""), "single-use enrollment token, needed on first start only")
	f.StringVar(&cfg.Name, "name", "", "agent id to ask for at enrollment")
	f.StringVar(&cfg.LocalAddr, "local-addr", "127.0.0.1:7480", "local API address ('-' disables it)")
	f.BoolVar(&cfg.DisableQUIC, "no-quic", false, "use HTTP/2 over TCP only")
	f.StringVar(&quota, "quota", "1GiB", "outbox disk quota for pending events (e.g. 500MiB, 2GiB)")
	f.StringVar(&memLimit, "memory-limit", "40MiB", "soft Go memory limit; the GC works harder near it (GOMEMLIMIT overrides; 0 disables)")
	f.IntVar(&cfg.BatchMaxEvents, "batch", 500, "events per uplink batch")
	f.IntVar(&cfg.Window, "window", 8, "uplink batches in flight")
	cmd.AddCommand(newAgentStatusCmd())
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
		Short: "Show a local agent's uplink, transport and outbox",
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
			fmt.Fprintf(w, "committed:  seq %d\n", st.GetCommittedSeq())
			fmt.Fprintf(w, "outbox:     %d events, %d of %d bytes pending, last seq %d\n", ob.GetPendingEvents(), ob.GetPendingBytes(), ob.GetQuotaBytes(), ob.GetLastSeq())
			if ob.GetBlocked() {
				fmt.Fprintf(w, "BLOCKED:    %s\n", ob.GetBlockedReason())
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
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size like 1GiB or 500MiB", s)
	}
	return v * mult, nil
}
