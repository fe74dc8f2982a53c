package main

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Inspect enrolled agents"}
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List enrolled agents, their connection and what they have committed",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.ListAgents(cmd.Context(), connect.NewRequest(&adminv1.ListAgentsRequest{}))
			if err != nil {
				return fmt.Errorf("list agents: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "AGENT", "STATE", "CONNECTED", "TRANSPORT", "COMMITTED SEQ", "EVENTS", "DUPLICATES", "CONFLICTS", "INCARNATION", "CERT EXPIRES", "ENROLLED")
			for _, a := range res.Msg.GetAgents() {
				conn, tr := "no", "-"
				if a.GetConnected() {
					conn, tr = "yes", a.GetTransport()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", a.GetId(), agentState(a), conn, tr, a.GetCommittedSeq(),
					a.GetEventsCommitted(), a.GetDuplicates(), a.GetConflicts(), a.GetIncarnation(), fmtTime(a.GetCertNotAfter()), fmtTime(a.GetEnrolledAt()))
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(newAgentsDescribeCmd())
	cmd.AddCommand(newAgentsRevokeCmd())
	return cmd
}

// agentState is "revoked", "cert expired" or "active".
func agentState(a *adminv1.Agent) string {
	switch {
	case a.GetRevoked():
		return "revoked"
	case a.GetCertNotAfter() != nil && a.GetCertNotAfter().AsTime().Before(time.Now()):
		return "cert expired"
	}
	return "active"
}
