package main

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

func alertClient() (adminv1connect.AlertServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewAlertServiceClient(hc, addr), nil
}

// alertThing is the watched thing of an alert instance: its labels other than the
// alert's own.
func alertThing(a *adminv1.Alert) string {
	var parts []string
	for _, k := range []string{"destination", "partner", "tier", "agent", "connector"} {
		if v := a.GetLabels()[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) == 0 {
		return a.GetKey()
	}
	return strings.Join(parts, ",")
}

func newAlertsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "Alert instances (of the Alert documents) and their history"}
	var state string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List alert instances, firing first",
		Example: `  crossdock alerts ls
  crossdock alerts ls --state firing`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := alertClient()
			if err != nil {
				return err
			}
			res, err := c.ListAlerts(cmd.Context(), connect.NewRequest(&adminv1.ListAlertsRequest{State: state}))
			if err != nil {
				return fmt.Errorf("list alerts: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "ALERT", "STATE", "SEVERITY", "CONDITION", "INSTANCE", "SINCE", "RESOLVED", "NOTIFIED", "VALUE")
			for _, a := range res.Msg.GetAlerts() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\n", a.GetName(), a.GetState(), a.GetSeverity(), a.GetCondition(),
					alertThing(a), fmtTime(a.GetStartedAt()), fmtTime(a.GetResolvedAt()), a.GetNotified(), a.GetValue())
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&state, "state", "", "only firing or resolved instances")
	var limit int32
	history := &cobra.Command{
		Use:   "history [ALERT]",
		Short: "Show alert state changes, newest first",
		Example: `  crossdock alerts history
  crossdock alerts history shop-lag --limit 20`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := alertClient()
			if err != nil {
				return err
			}
			req := &adminv1.ListAlertHistoryRequest{Limit: limit}
			if len(args) == 1 {
				req.Name = args[0]
			}
			res, err := c.ListAlertHistory(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("alert history: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "AT", "ALERT", "STATE", "INSTANCE", "VALUE")
			for _, ch := range res.Msg.GetChanges() {
				a := ch.GetAlert()
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTime(ch.GetAt()), a.GetName(), a.GetState(), alertThing(a), a.GetValue())
			}
			return tw.Flush()
		},
	}
	history.Flags().Int32Var(&limit, "limit", 100, "at most this many changes (up to 1000)")
	cmd.AddCommand(ls, history)
	return cmd
}
