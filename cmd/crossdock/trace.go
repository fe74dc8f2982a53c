package main

import (
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/console"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

func newTraceCmd() *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "trace KEY=VALUE...",
		Short: "Show a business key's timeline: its ledger events and every delivery step per destination",
		Long: `Show every ledger event carrying all the given business keys (sku=A-100,
order=SO-1, ...), oldest first, with what delivery did with it at each destination:
attempts with their outcome and HTTP status, dead letters, retries and replays, and
the lag of each step from the event's commit. Attempts come from the leader's
in-memory attempt log (lost on failover); dead letters and cursors are replicated.`,
		Example: "  crossdock trace sku=A-100\n  crossdock trace order=SO-1 -o json",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := console.ParseKeys(args)
			if err != nil {
				return fmt.Errorf("trace: %w", err)
			}
			c, err := resolveConfig()
			if err != nil {
				return err
			}
			hc, base, _, err := c.HTTPClient()
			if err != nil {
				return err
			}
			client := adminv1connect.NewTimelineServiceClient(hc, base)
			res, err := client.GetTimeline(cmd.Context(), connect.NewRequest(&adminv1.GetTimelineRequest{Keys: keys, Limit: limit}))
			if err != nil {
				return fmt.Errorf("trace %s: %w", fmtKeys(keys), err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			printTimeline(cmd, res.Msg)
			return nil
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many events (the newest), up to 1000")
	return cmd
}

func traceTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

func fmtLag(micros int64) string {
	if micros == 0 {
		return "-"
	}
	return "+" + (time.Duration(micros) * time.Microsecond).Round(time.Millisecond).String()
}

func printTimeline(cmd *cobra.Command, t *adminv1.GetTimelineResponse) {
	w := cmd.OutOrStdout()
	if len(t.GetEvents()) == 0 {
		fmt.Fprintln(w, "no events carry these keys")
	}
	for _, ev := range t.GetEvents() {
		fmt.Fprintf(w, "seq %d  %s  %s  id %s  agent %s\n", ev.GetSeq(), ev.GetType(), fmtKeys(ev.GetKeys()), ev.GetId(), ev.GetAgent())
		fmt.Fprintf(w, "  occurred %s  committed %s (%s)\n", traceTime(ev.GetOccurredAt()), traceTime(ev.GetCommittedAt()), fmtLag(ev.GetCommitLagMicros()))
		for _, d := range ev.GetDeliveries() {
			fmt.Fprintf(w, "  → %s (route %s): %s", d.GetDestination(), d.GetRoute(), d.GetState())
			if d.GetAt() != nil {
				fmt.Fprintf(w, " at %s (%s after commit)", traceTime(d.GetAt()), fmtLag(d.GetLagMicros()))
			}
			if d.GetDeadLetterId() != "" {
				fmt.Fprintf(w, "  dead letter %s", d.GetDeadLetterId())
			}
			fmt.Fprintln(w)
			for _, s := range d.GetSteps() {
				var b strings.Builder
				fmt.Fprintf(&b, "      %s  %-15s %-9s", traceTime(s.GetAt()), s.GetKind(), s.GetOutcome())
				if s.GetAttempt() > 0 && s.GetKind() == "attempt" {
					fmt.Fprintf(&b, " #%d", s.GetAttempt())
				}
				if s.GetHttpStatus() != 0 {
					fmt.Fprintf(&b, " HTTP %d", s.GetHttpStatus())
				}
				if s.GetDurationMicros() != 0 {
					fmt.Fprintf(&b, " took %s", (time.Duration(s.GetDurationMicros()) * time.Microsecond).Round(time.Millisecond))
				}
				fmt.Fprintf(&b, " lag %s", fmtLag(s.GetLagMicros()))
				if s.GetReplayId() != "" {
					fmt.Fprintf(&b, " replay %s", s.GetReplayId())
				}
				if s.GetError() != "" {
					fmt.Fprintf(&b, " error: %s", oneLine(s.GetError(), 80))
				}
				fmt.Fprintln(w, b.String())
			}
		}
	}
	since := "empty"
	if t.GetAttemptsSince() != nil {
		since = "since " + traceTime(t.GetAttemptsSince())
	}
	cmd.PrintErrf("%d events; ledger at seq %d; attempts from node %s's log (%s)\n", len(t.GetEvents()), t.GetLastSeq(), t.GetAttemptsNode(), since)
	if t.GetTruncated() {
		cmd.PrintErrf("older events left out: raise --limit (at most 1000)\n")
	}
}
