package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/internal/demo/sampleerp"
	"github.com/crossdock/crossdock/internal/demo/samplemarket"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

func newDemoCmd() *cobra.Command {
	var skus, rate int
	var keep bool
	var localAddr string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a one-node control plane, an enrolled agent and a sample ERP it captures",
		Long: `Demo starts, in one process and a temporary directory: a one-node control plane, an
agent enrolled with a fresh token, and a sample ERP (a SQLite database with items, stock
levels in three warehouses and sales orders) that a simulator keeps changing. The agent
captures the ERP with the built-in sql connector, run as a plugin subprocess. It runs
until Ctrl-C and prints the commands to watch it with.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if skus < demoMinSKUs {
				return fmt.Errorf("--skus %d: the demo needs at least %d items (the banner's examples use %s)", skus, demoMinSKUs, demoSKU)
			}
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "warn" // keep the banner readable; --log-level info shows everything
				if err := setupLogging(); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			dir, err := os.MkdirTemp("", "crossdock-demo-")
			if err != nil {
				return fmt.Errorf("create demo dir: %w", err)
			}
			if !keep {
				defer os.RemoveAll(dir)
			}
			srv, err := controlplane.New(ctx, controlplane.Config{
				NodeID: "demo-cp-1", DataDir: filepath.Join(dir, "server"),
				Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Bootstrap: true,
				// The sample marketplace below listens on loopback, which webhooks may
				// reach only when allowed (crossdock server --webhook-allow).
				WebhookAllow:  []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
				MetricsListen: "127.0.0.1:0",
				AlertInterval: 2 * time.Second,
			})
			if err != nil {
				return err
			}
			srvDone := make(chan error, 1)
			go func() { srvDone <- srv.Run(ctx) }()

			g.config = srv.AdminConfigPath()
			admin, err := adminClient()
			if err != nil {
				return err
			}
			tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(time.Minute), AgentName: "demo-agent"}))
			if err != nil {
				return fmt.Errorf("create enrollment token: %w", err)
			}
			// A sample marketplace receives WH-EAST's stock through a signed webhook, under
			// a policy (rate limit, coalescing, retries) applied like any routing document.
			market, err := samplemarket.StartDemo("127.0.0.1:0")
			if err != nil {
				return err
			}
			defer market.Close()
			routes, err := routingClient()
			if err != nil {
				return err
			}
			if _, err := routes.ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: market.Documents()})); err != nil {
				return fmt.Errorf("apply the marketplace's routing documents: %w", err)
			}
			go reportMarket(ctx, cmd.OutOrStdout(), market)
			erpPath := filepath.Join(dir, "erp.db")
			erp, err := sampleerp.Open(ctx, erpPath, skus)
			if err != nil {
				return err
			}
			defer erp.Close()
			settings, err := json.Marshal(sampleerp.Settings(erp.DSN))
			if err != nil {
				return fmt.Errorf("sample ERP settings: %w", err)
			}
			ag, err := agent.New(ctx, agent.Config{
				DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.Addr()},
				EnrollToken: tok.Msg.GetToken(), LocalAddr: localAddr,
				Connectors: []pluginhost.Connector{{Name: "sample-erp", Builtin: "sql", Settings: settings}},
			})
			if err != nil {
				return err
			}
			agDone := make(chan error, 1)
			go func() { agDone <- ag.Run(ctx) }()

			fmt.Fprintf(cmd.OutOrStdout(), `
Crossdock demo is running (data in %s).
  control plane  %s   (node demo-cp-1, raft single voter)
  agent          %s   enrolled with a single-use token; local API on %s
  sample ERP     %s: %d SKUs x %d warehouses, ~%d changes/s
                 captured by the sql connector "sample-erp" (stock levels, orders, items)
  marketplace    %s   WH-EAST stock via signed webhook (route demo-market-stock);
                 it allows 50 req/s and fails some requests; GET it for what it holds
  web console    https://%s/ui/   log in with the token: line of %s
                 (the cluster's own CA signs it: accept the certificate, or trust %s)
  metrics        http://%s/metrics   (and /healthz, /readyz)

In another terminal:
  export CROSSDOCK_CONFIG=%s
`, dir, srv.Addr(), ag.ID(), ag.LocalAddr(), erpPath, skus, len(sampleerp.Locations), rate, strings.TrimSuffix(market.URL, "inventory"),
				srv.Addr(), srv.AdminConfigPath(), filepath.Join(dir, "ca.pem"), srv.MetricsAddr(), srv.AdminConfigPath())
			demoCommands(cmd.OutOrStdout(), selfCommand(), ag.LocalAddr())
			// The partner curls below ask for and order demoSKU: print them once the
			// agent's first capture has brought the item catalog in, so that pasting
			// them at once works.
			if err := waitForItem(ctx, srv, demoSKU, time.Minute); err != nil {
				return err
			}
			if err := demoPartner(ctx, cmd.OutOrStdout(), dir, srv.Addr(), srv.AdminConfigPath()); err != nil {
				return err
			}
			if err := demoOrders(ctx, cmd.OutOrStdout(), srv.Store().Ledger(), srv.Addr(), filepath.Join(dir, "ca.pem")); err != nil {
				return err
			}

			simErr := sampleerp.NewSimulator(erp, uint64(time.Now().UnixNano())).Run(ctx, float64(rate))
			cancel()
			return errors.Join(ignoreCanceled(simErr), <-agDone, <-srvDone)
		},
	}
	f := cmd.Flags()
	f.IntVar(&skus, "skus", 2000, "items in the sample ERP, each stocked in every warehouse")
	f.IntVar(&rate, "rate", 200, "changes per second in the sample ERP (stock moves, new and advancing orders)")
	f.BoolVar(&keep, "keep", false, "keep the demo's data directory")
	f.StringVar(&localAddr, "local-addr", "127.0.0.1:7480", "agent local API address")
	return cmd
}

// demoSKU is the item the banner's examples ask for; demoMinSKUs makes sure it exists.
const (
	demoSKU     = "SKU-00042"
	demoMinSKUs = 42
)

// waitForItem polls the server's item view until it holds sku, for at most limit.
func waitForItem(ctx context.Context, srv *controlplane.Server, sku string, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := srv.ViewsState().Item(sku); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("the sample ERP's item %s did not reach the control plane within %s: is the agent connected? (--log-level info shows why)", sku, limit)
		case <-tick.C:
		}
	}
}

// demoCommands prints the banner's commands, run as self (the path that starts this
// binary from the user's shell), in aligned columns.
func demoCommands(w io.Writer, self, agentAddr string) {
	cmds := [][2]string{
		{"events tail", "follow commits"},
		{"events ls --key sku=SKU-00042", "one SKU's history, in order"},
		{"agents ls", "agent, transport (h3 = QUIC)"},
		{"agent status --agent " + agentAddr, "outbox, uplink and connectors"},
		{"events ls --type order --limit 5", "sales orders from the ERP"},
		{"destinations status", "delivery to the marketplace: cursor, lag, breaker"},
		{"dlq ls", "messages the marketplace refused, with the reason"},
		{"trace sku=SKU-00042", "one SKU's events and every delivery attempt"},
		{"alerts ls", "demo-market-errors fires: the marketplace fails ~2.5%"},
		{"orders ls", "partner orders and their status (below)"},
	}
	width := 0
	for _, c := range cmds {
		width = max(width, len(self)+1+len(c[0]))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  # %s\n", width, self+" "+c[0], c[1])
	}
	fmt.Fprint(w, "\nCtrl-C stops everything.\n")
}

// selfCommand is how the user's shell runs this binary: its name when $PATH finds this
// very file, else its path relative to the working directory when it lies below it
// ("bin/crossdock"), else its absolute path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "crossdock"
	}
	cwd, _ := os.Getwd()
	return commandFor(exe, cwd, exec.LookPath)
}

func commandFor(exe, cwd string, lookPath func(string) (string, error)) string {
	exe = resolve(exe)
	name := filepath.Base(exe)
	if p, err := lookPath(name); err == nil && filepath.IsAbs(p) && resolve(p) == exe {
		return name
	}
	if cwd != "" {
		if rel, err := filepath.Rel(resolve(cwd), exe); err == nil && filepath.IsLocal(rel) {
			if !strings.Contains(rel, string(filepath.Separator)) {
				rel = "." + string(filepath.Separator) + rel
			}
			return rel
		}
	}
	return exe
}

// resolve is p with symbolic links followed, or p when that fails.
func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// reportMarket prints what the marketplace received every 10 seconds.
func reportMarket(ctx context.Context, w io.Writer, m *samplemarket.Demo) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fmt.Fprintf(w, "%s  %s\n", time.Now().Format(time.TimeOnly), m.Summary())
		}
	}
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
