package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect the raft cluster"}
	cmd.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "List raft peers with role and applied index",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.GetClusterStatus(cmd.Context(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
			if err != nil {
				return fmt.Errorf("cluster status: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "ADDRESS", "ROLE", "APPLIED INDEX", "LAST CONTACT")
			for _, p := range res.Msg.GetPeers() {
				applied := "-"
				if p.GetAppliedIndex() != 0 {
					applied = fmt.Sprint(p.GetAppliedIndex())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.GetId(), p.GetAddress(), p.GetRole(), applied, fmtTime(p.GetLastContact()))
			}
			return tw.Flush()
		},
	})
	return cmd
}
