package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/internal/sample"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func newDemoCmd() *cobra.Command {
	var skus, rate int
	var keep bool
	var localAddr string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a one-node control plane, an enrolled agent and a sample inventory publisher",
		Long: `Demo starts, in one process and a temporary directory: a one-node control plane, an
agent enrolled with a fresh token, and a publisher of inventory changes for a
distributor with three warehouses. It runs until Ctrl-C and prints the commands to
watch it with.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			tok, err := admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Ttl: durationpb.New(time.Minute), AgentName: "demo-agent"}))
			if err != nil {
				return fmt.Errorf("create enrollment token: %w", err)
			}
			ag, err := agent.New(ctx, agent.Config{
				DataDir: filepath.Join(dir, "agent"), Servers: []string{srv.Addr()},
				EnrollToken: tok.Msg.GetToken(), LocalAddr: localAddr,
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
  publisher      %d SKUs x %d warehouses, then ~%d changes/s

In another terminal:
  export CROSSDOCK_CONFIG=%s
  crossdock events tail                       # follow commits
  crossdock events ls --key sku=SKU-00042     # one SKU's history, in order
  crossdock agents ls                         # agent, transport (h3 = QUIC)
  crossdock agent status --agent %s           # outbox and uplink

Ctrl-C stops everything.
`, dir, srv.Addr(), ag.ID(), ag.LocalAddr(), skus, len(sample.DefaultWarehouses), rate, srv.AdminConfigPath(), ag.LocalAddr())

			pubErr := runPublisher(ctx, ag, skus, rate)
			cancel()
			return errors.Join(ignoreCanceled(pubErr), <-agDone, <-srvDone)
		},
	}
	f := cmd.Flags()
	f.IntVar(&skus, "skus", 2000, "SKUs per warehouse")
	f.IntVar(&rate, "rate", 200, "inventory changes per second after the initial snapshot")
	f.BoolVar(&keep, "keep", false, "keep the demo's data directory")
	f.StringVar(&localAddr, "local-addr", "127.0.0.1:7480", "agent local API address")
	return cmd
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runPublisher publishes a full stock snapshot, then a steady stream of changes.
func runPublisher(ctx context.Context, ag *agent.Agent, skus, rate int) error {
	// The generator's clock advances a millisecond per event; start it far enough back
	// that the snapshot does not claim to have happened in the future.
	start := time.Now().Add(-time.Duration(skus*len(sample.DefaultWarehouses)) * time.Millisecond)
	gen := sample.NewInventory(uint64(time.Now().UnixNano()), sample.DefaultWarehouses, skus, start)
	snap := gen.Snapshot()
	for i := 0; i < len(snap); i += 1000 {
		if _, err := ag.Publish(ctx, "sample-erp", snap[i:min(i+1000, len(snap))]); err != nil {
			return fmt.Errorf("publish snapshot: %w", err)
		}
	}
	const tick = 100 * time.Millisecond
	per := max(rate/10, 1)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		batch := make([]*eventv1.Event, per)
		for i := range batch {
			batch[i] = gen.Next()
		}
		if _, err := ag.Publish(ctx, "sample-erp", batch); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
}
