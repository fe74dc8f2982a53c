package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane/ledger"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show the CLI config commands use"}
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Show which CLI config file is used, its nodes and cluster (never the token)",
		Long: `Show the CLI config file commands read (--config, $CROSSDOCK_CONFIG, else
~/.config/crossdock/config.yaml), with --addr and $CROSSDOCK_ADDR applied: the node
addresses tried in turn, and the cluster the CA belongs to. It does not dial.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, exists := configPath()
			c, err := resolveConfig()
			if err != nil {
				return fmt.Errorf("CLI config %s: %w", path, err)
			}
			cluster := c.ClusterID
			if cluster == "" {
				cluster = ledger.ClusterIDOf(c.CAPEM) + " (from the CA)"
			}
			file := path
			if !exists {
				file += " (not found: flags and environment only)"
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "config:  %s\n", file)
			fmt.Fprintf(w, "nodes:   %s\n", strings.Join(c.Servers(), ", "))
			fmt.Fprintf(w, "cluster: %s\n", cluster)
			tok := "not set"
			if c.Token != "" {
				tok = "set"
			}
			fmt.Fprintf(w, "token:   %s\n", tok)
			return nil
		},
	})
	return cmd
}
