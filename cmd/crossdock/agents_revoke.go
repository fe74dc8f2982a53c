package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newAgentsRevokeCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Retire an agent's identity: its stream closes at once and its certificates stop working",
		Long: `Revoke an agent. Its stream is closed at once, its certificates are refused from then
on, and its name can be enrolled again only with a replacing token
(crossdock token create --name ID --replace). Events it had not sent stay in its outbox.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.RevokeAgent(cmd.Context(), connect.NewRequest(&adminv1.RevokeAgentRequest{Id: args[0], Reason: reason}))
			if err != nil {
				return fmt.Errorf("revoke agent %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			a := res.Msg.GetAgent()
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s revoked at %s: %s\n", a.GetId(), fmtTime(a.GetRevokedAt()), a.GetRevokedReason())
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown in agents ls/describe and to the agent")
	return cmd
}
