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
			tw := newTable(cmd.OutOrStdout(), "ID", "API", "RAFT", "ROLE", "APPLIED INDEX", "LAST CONTACT")
			for _, p := range res.Msg.GetPeers() {
				applied := "-"
				if p.GetAppliedIndex() != 0 {
					applied = fmt.Sprint(p.GetAppliedIndex())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.GetId(), p.GetApiAddress(), p.GetAddress(), p.GetRole(), applied, fmtTime(p.GetLastContact()))
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node from the raft cluster (e.g. a dead node being replaced)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			if _, err := c.RemovePeer(cmd.Context(), connect.NewRequest(&adminv1.RemovePeerRequest{Id: args[0]})); err != nil {
				return fmt.Errorf("remove peer: %w", err)
			}
			cmd.PrintErrf("removed %s from the cluster\n", args[0])
			return nil
		},
	})
	return cmd
}
