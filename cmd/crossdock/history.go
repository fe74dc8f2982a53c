package main

import (
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane/routing"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

func kindArg(s string) (routing.Kind, error) {
	k, ok := routing.ParseKind(s)
	if !ok {
		return "", fmt.Errorf("%q: want route, destination, policy, retention, tier, partner, alert, tradingpartner or agentconfig", s)
	}
	return k, nil
}

func newHistoryCmd() *cobra.Command {
	var diff bool
	cmd := &cobra.Command{
		Use:   "history route|destination|policy|retention|tier|partner|alert|tradingpartner|agentconfig NAME",
		Short: "Show every version of a routing document",
		Example: `  crossdock history route marketplace-inventory
  crossdock history route marketplace-inventory --diff`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kindArg(args[0])
			if err != nil {
				return err
			}
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.GetHistory(cmd.Context(), connect.NewRequest(&routingv1.GetHistoryRequest{Kind: string(k), Name: args[1]}))
			if err != nil {
				return rpcError("history", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			w := cmd.OutOrStdout()
			tw := newTable(w, "VERSION", "APPLIED", "BY", "CHANGE")
			for _, v := range res.Msg.GetVersions() {
				change := v.GetComment()
				if v.GetDeleted() {
					change = "deleted"
				}
				by := v.GetActor()
				if by == "" {
					by = "-"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", v.GetVersion(), fmtTime(v.GetAppliedAt()), by, change)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if diff {
				for _, v := range res.Msg.GetVersions() {
					fmt.Fprintf(w, "\nversion %d:\n", v.GetVersion())
					for _, l := range strings.Split(strings.TrimSuffix(v.GetDiff(), "\n"), "\n") {
						fmt.Fprintf(w, "    %s\n", l)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&diff, "diff", false, "show what each version changed")
	return cmd
}

func newRollbackCmd() *cobra.Command {
	var (
		to     string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "rollback route|destination|policy|retention|tier|partner|alert|tradingpartner|agentconfig NAME --to VERSION",
		Short: "Make an earlier version of a routing document current again (as a new version)",
		Long: `Rollback writes the content of an earlier version as a new version, so the history
keeps every step. The result must still be consistent (a route's destinations and a
destination's policy must exist).`,
		Example: "  crossdock rollback route marketplace-inventory --to 2",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kindArg(args[0])
			if err != nil {
				return err
			}
			v, err := strconv.ParseUint(to, 10, 64)
			if err != nil || v == 0 {
				return fmt.Errorf("--to %q: want a version number (see crossdock history %s %s)", to, strings.ToLower(string(k)), args[1])
			}
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.Rollback(cmd.Context(), connect.NewRequest(&routingv1.RollbackRequest{Kind: string(k), Name: args[1], ToVersion: v, DryRun: dryRun}))
			if err != nil {
				return rpcError("rollback", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			printApplied(cmd.OutOrStdout(), res.Msg.GetDocument(), dryRun)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the version to restore (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the diff without changing anything")
	return cmd
}
