package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// globals are the flags every command shares.
type globals struct {
	addr      string
	token     string
	config    string
	caCert    string
	output    string
	logLevel  string
	logFormat string
}

var g globals

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "crossdock",
		Short:         "Crossdock: the integration fabric between distributors' ERPs and their partners",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return setupLogging()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", "", "control plane address host:port (env CROSSDOCK_ADDR)")
	pf.StringVar(&g.token, "token", "", "admin token (env CROSSDOCK_TOKEN)")
	pf.StringVar(&g.config, "config", "", "CLI config file (env CROSSDOCK_CONFIG; default ~/.config/crossdock/config.yaml)")
	pf.StringVar(&g.caCert, "ca-cert", "", "cluster CA certificate file (default: from the config file)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(
		newServerCmd(),
		newAgentCmd(),
		newTokenCmd(),
		newPublishCmd(),
		newAgentsCmd(), newReleasesCmd(),
		newEventsCmd(),
		newSnapshotCmd(),
		newClusterCmd(),
		newDemoCmd(),
		newApplyCmd(), newRoutesCmd(), withDestinationsStatus(newDestinationsCmd()), newPoliciesCmd(), newHistoryCmd(), newRollbackCmd(), newDeleteCmd(),
		newDlqCmd(), newReplayCmd(), newArchiveCmd(), newLedgerCmd(), newSecretsCmd(),
		newVersionCmd(), newConfigCmd(),
		newPluginCmd(),
		newInventoryCmd(), newPricesCmd(),
		newPartnersCmd(),
		newOrdersCmd(),
		newTraceCmd(),
		newAlertsCmd(),
		newEDICmd(),
		newAccessCmd(), newAuditCmd(), // access.go
	)
	addCompletions(root) // Tab completes agent, route and destination names (completion.go)
	return root
}

func setupLogging() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch g.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format: %q is not text or json", g.logFormat)
	}
	slog.SetDefault(slog.New(h))
	return nil
}

// resolveConfig merges flags, then environment, then the config file.
func resolveConfig() (*cliconfig.Config, error) {
	c := &cliconfig.Config{}
	path := g.config
	if path == "" {
		path = cliconfig.DefaultPath()
	}
	if path != "" {
		fc, err := cliconfig.Load(path)
		switch {
		case err == nil:
			c = fc
		case errors.Is(err, os.ErrNotExist) && g.config == "" && os.Getenv(cliconfig.EnvPath) == "":
		default:
			return nil, err
		}
	}
	pick := func(flag, env, file string) string {
		if flag != "" {
			return flag
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return file
	}
	if a := pick(g.addr, "CROSSDOCK_ADDR", ""); a != "" {
		// An address given explicitly is the only one dialled.
		c.Addr, c.Addrs = a, nil
	}
	c.Token = pick(g.token, "CROSSDOCK_TOKEN", c.Token)
	if g.caCert != "" {
		b, err := os.ReadFile(g.caCert)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		c.CAPEM = string(b)
	}
	if c.Addr == "" {
		return nil, errors.New("no control plane address: pass --addr, set CROSSDOCK_ADDR, or point CROSSDOCK_CONFIG at the admin.yaml the server wrote at bootstrap")
	}
	if c.CAPEM == "" {
		return nil, errors.New("no cluster CA: pass --ca-cert or use the config file written at bootstrap")
	}
	return c, nil
}

func adminClient() (adminv1connect.AdminServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	client, _, err := c.AdminClient()
	return client, err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
