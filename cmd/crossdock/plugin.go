package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/plugins/builtin"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// newPluginCmd serves a built-in connector over go-plugin. The agent starts it as a
// subprocess of its own executable; it is hidden because nobody runs it by hand.
func newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "plugin TYPE",
		Short:  "Serve a built-in connector to the agent (started by the agent, not by hand)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctor, ok := builtin.Lookup(args[0])
			if !ok {
				return fmt.Errorf("no built-in connector %q (built-ins: %s)", args[0], strings.Join(builtin.Names(), ", "))
			}
			sdk.Serve(ctor(sdk.Logger()))
			return nil
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List the built-in connectors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tw := newTable(cmd.OutOrStdout(), "TYPE", "VERSION", "SOURCE", "SINK", "DESCRIPTION")
			for _, name := range builtin.Names() {
				ctor, _ := builtin.Lookup(name)
				sp := ctor(slog.New(slog.DiscardHandler)).Spec()
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", name, sp.Version, sp.Source, sp.Sink, sp.Description)
			}
			return tw.Flush()
		},
	})
	return cmd
}
