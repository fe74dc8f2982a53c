package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ledger", Short: "Inspect the event ledger's retention"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show what retention removed: the low-water mark, the dedup window's start, events held, the last prune",
		Long: `Show what ledger retention (the Retention document) removed, as the answering node holds it:
events below the low-water seq are gone (reads below it fail with out_of_range),
ids committed below the dedup seq are no longer recognised as duplicates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.GetClusterStatus(cmd.Context(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
			if err != nil {
				return fmt.Errorf("ledger status: %w", err)
			}
			r := res.Msg.GetRetention()
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "last seq:     %d\n", res.Msg.GetLastSeq())
			if r.GetLowWaterSeq() == 0 {
				fmt.Fprintf(w, "low-water:    none (nothing pruned)\n")
			} else {
				fmt.Fprintf(w, "low-water:    seq %d, committed at %s (earlier events pruned)\n", r.GetLowWaterSeq(), fmtTime(r.GetLowWaterAt()))
			}
			if r.GetDedupSeq() == 0 {
				fmt.Fprintf(w, "dedup from:   seq 1 (every id committed is recognised)\n")
			} else {
				fmt.Fprintf(w, "dedup from:   seq %d, committed at %s (ids before it are no longer recognised as duplicates)\n", r.GetDedupSeq(), fmtTime(r.GetDedupAt()))
			}
			fmt.Fprintf(w, "events held:  %d (%d pruned)\n", r.GetEventsHeld(), r.GetEventsPruned())
			last := "never"
			if r.GetLastPrune() != nil && r.GetLastPrune().GetSeconds() > 0 {
				last = fmtTime(r.GetLastPrune())
			}
			fmt.Fprintf(w, "last prune:   %s\n", last)
			return nil
		},
	})
	return cmd
}
