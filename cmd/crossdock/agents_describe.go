package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
)

func newAgentsDescribeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe ID",
		Short: "Show an agent and the state of its connectors",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.DescribeAgent(cmd.Context(), connect.NewRequest(&adminv1.DescribeAgentRequest{Id: args[0]}))
			if err != nil {
				return fmt.Errorf("describe agent %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			w := cmd.OutOrStdout()
			a := res.Msg.GetAgent()
			fmt.Fprintf(w, "agent:      %s\n", a.GetId())
			fmt.Fprintf(w, "enrolled:   %s\n", fmtTime(a.GetEnrolledAt()))
			if a.GetConnected() {
				fmt.Fprintf(w, "connected:  yes, via %s from %s to node %s, last seen %s\n", a.GetTransport(), a.GetRemoteAddr(), a.GetNodeId(), fmtTime(a.GetLastSeen()))
			} else {
				fmt.Fprintln(w, "connected:  no")
			}
			fmt.Fprintf(w, "state:      %s, incarnation %d", agentState(a), a.GetIncarnation())
			if a.GetRevoked() {
				fmt.Fprintf(w, ", revoked at %s: %s", fmtTime(a.GetRevokedAt()), a.GetRevokedReason())
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "cert:       expires %s\n", fmtTime(a.GetCertNotAfter()))
			fmt.Fprintf(w, "committed:  seq %d, %d events, %d duplicates, %d conflicts\n", a.GetCommittedSeq(), a.GetEventsCommitted(), a.GetDuplicates(), a.GetConflicts())
			printIDConflicts(w, a.GetRecentConflicts())
			printFleetAgent(cmd, a.GetId()) // fleet.go
			if res.Msg.GetConnectorsReportedAt() == nil {
				fmt.Fprintln(w, "connectors: not reported to this control plane node yet")
				return nil
			}
			fmt.Fprintf(w, "connectors: as reported at %s\n", fmtTime(res.Msg.GetConnectorsReportedAt()))
			return printConnectors(w, res.Msg.GetConnectors())
		},
	}
}

// printIDConflicts lists events not committed because their id was committed before
// with other content.
func printIDConflicts(w io.Writer, cs []*adminv1.IdConflict) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, "conflicts:  events not committed: their id was committed before with other content (newest last)")
	for _, c := range cs {
		fmt.Fprintf(w, "  %s  id %s  agent seq %d  connector %s  position %s  (ledger seq %d holds the id): %s\n",
			fmtTime(c.GetAt()), c.GetId(), c.GetAgentSeq(), c.GetConnector(), c.GetPosition(), c.GetExistingSeq(), c.GetDiffers())
	}
}

// printConnectors writes a table of connector states and, below it, their errors.
func printConnectors(w io.Writer, cs []*agentv1.ConnectorStatus) error {
	if len(cs) == 0 {
		fmt.Fprintln(w, "  (none)")
		return nil
	}
	tw := newTable(w, "  NAME", "PLUGIN", "STATE", "SINCE", "ROLE", "POSITION", "CAPTURED", "RESTARTS", "CONFLICTS")
	for _, c := range cs {
		var roles []string
		if c.GetSource() {
			roles = append(roles, "source")
		}
		if c.GetSink() {
			roles = append(roles, "sink")
		}
		role := strings.Join(roles, "+")
		if role == "" {
			role = "-"
		}
		pos := c.GetPosition()
		if pos == "" {
			pos = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", c.GetName(), c.GetPlugin(), c.GetState(), fmtTime(c.GetStateSince()), role, pos, c.GetEventsCaptured(), c.GetRestarts(), c.GetConflicts())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range cs {
		if c.GetHealthError() != "" && c.GetState() == "running" {
			fmt.Fprintf(w, "  %s: unhealthy at %s: %s\n", c.GetName(), fmtTime(c.GetHealthCheckedAt()), c.GetHealthError())
		}
		if c.GetLastError() == "" {
			continue
		}
		fmt.Fprintf(w, "  %s: %s", c.GetName(), c.GetLastError())
		if c.GetNextAttempt() != nil && (c.GetState() == "restarting" || c.GetState() == "stalled") {
			fmt.Fprintf(w, " (attempt %d, next at %s)", c.GetAttempt(), fmtTime(c.GetNextAttempt()))
		}
		fmt.Fprintln(w)
	}
	return nil
}
