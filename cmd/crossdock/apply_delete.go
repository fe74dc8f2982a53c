package main

import (
	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

func newDeleteCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "delete route|destination|policy|retention|tier|partner|alert|tradingpartner|agentconfig NAME",
		Short: "Delete a routing document (its history stays; rollback brings it back)",
		Long: `Delete removes a route, destination or policy. A destination that a route still
names, or a policy that a destination still names, is refused: change or delete those
first. The history keeps every version, so crossdock rollback --to N restores it.`,
		Example: "  crossdock delete route old-partner-orders --dry-run",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kindArg(args[0])
			if err != nil {
				return err
			}
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.DeleteDocument(cmd.Context(), connect.NewRequest(&routingv1.DeleteDocumentRequest{Kind: string(k), Name: args[1], DryRun: dryRun}))
			if err != nil {
				return rpcError("delete", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			printApplied(cmd.OutOrStdout(), res.Msg.GetDocument(), dryRun)
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and show what would be removed, without changing anything")
	return cmd
}
