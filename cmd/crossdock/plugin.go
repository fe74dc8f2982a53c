package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/plugins/builtin"
	"github.com/crossdock/crossdock/plugins/sdk"
)

// newPluginCmd serves a built-in connector over go-plugin. The agent starts it as a
// subprocess of its own executable; it is hidden because nobody runs it by hand.
func newPluginCmd() *cobra.Command {
	return &cobra.Command{
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
}
