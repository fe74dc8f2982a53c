package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/labels"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// The fleet commands: `agents ls` (health of the fleet), `agents label`, and the fleet
// part of `agents describe`. AgentConfig documents go through `apply`, `history`,
// `rollback` like the other documents (docs/fleet.md).

func fleetClient() (adminv1connect.FleetServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewFleetServiceClient(hc, addr), nil
}

func newAgentsLsCmd() *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List agents: connection, version, configuration, backlog, cert expiry, last contact",
		Long: `List enrolled agents with their health: connected or not, the build they run, the
AgentConfig chosen for them and its state (applied, failed, pending, local, conflict),
their outbox backlog and the age of the oldest pending event, certificate expiry and
last contact. --selector site=east lists the agents with those labels.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := labels.Parse(selector); err != nil {
				return fmt.Errorf("--selector: %w", err)
			}
			c, err := fleetClient()
			if err != nil {
				return err
			}
			res, err := c.ListFleet(cmd.Context(), connect.NewRequest(&adminv1.ListFleetRequest{Selector: selector}))
			if err != nil {
				return fmt.Errorf("list agents: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			return printFleet(cmd.OutOrStdout(), res.Msg.GetAgents(), time.Now())
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only agents with these labels (site=east,erp=tryton)")
	return cmd
}

func printFleet(w io.Writer, agents []*adminv1.FleetAgent, now time.Time) error {
	tw := newTable(w, "AGENT", "STATE", "CONNECTED", "VERSION", "LABELS", "CONFIG", "CONFIG STATE", "BACKLOG", "OLDEST PENDING", "DUPLICATES", "CERT EXPIRES", "LAST CONTACT")
	var failed []*adminv1.FleetAgent
	for _, fa := range agents {
		a := fa.GetAgent()
		conn := "no"
		if a.GetConnected() {
			conn = "yes (" + a.GetTransport() + ")"
		}
		backlog, oldest := "-", "-"
		if fa.GetLastContact() != nil {
			backlog = fmt.Sprint(fa.GetPendingEvents())
			if fa.GetOldestPending() != nil {
				oldest = age(now, fa.GetOldestPending())
			}
		}
		contact := "-"
		if fa.GetLastContact() != nil {
			contact = age(now, fa.GetLastContact()) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.GetId(), agentState(a), conn, dash(fa.GetVersion()),
			dash(labels.String(fa.GetLabels())), fleetConfig(fa), dash(fa.GetConfigState()), backlog, oldest, a.GetDuplicates(),
			fmtTime(a.GetCertNotAfter()), contact)
		if fa.GetConfigState() == "failed" || fa.GetConfigState() == "conflict" {
			failed = append(failed, fa)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, fa := range failed {
		msg := fa.GetConfigError()
		if fa.GetConfigState() == "conflict" {
			msg = fa.GetConfigConflict()
		}
		fmt.Fprintf(w, "%s: configuration %s: %s\n", fa.GetAgent().GetId(), fa.GetConfigState(), msg)
	}
	return nil
}

// fleetConfig is "name@version" of the configuration chosen for the agent, with what it
// runs when that differs.
func fleetConfig(fa *adminv1.FleetAgent) string {
	want := "-"
	if fa.GetConfigName() != "" {
		want = fmt.Sprintf("%s@%d", fa.GetConfigName(), fa.GetConfigVersion())
	}
	if fa.GetRunningName() != "" && (fa.GetRunningName() != fa.GetConfigName() || fa.GetRunningVersion() != fa.GetConfigVersion()) {
		want += fmt.Sprintf(" (runs %s@%d)", fa.GetRunningName(), fa.GetRunningVersion())
	}
	return want
}

func age(now time.Time, ts *timestamppb.Timestamp) string {
	d := now.Sub(ts.AsTime())
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

func newAgentsLabelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "label ID [KEY=VALUE...]",
		Short: "Replace an agent's labels (none given: remove them all)",
		Long: `Replace the labels of an enrolled agent; AgentConfig documents select agents by
them. Labels are first given at enrollment (crossdock agent --label site=east).`,
		Example: "  crossdock agents label store-12 site=east erp=tryton",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := labels.Parse(args[1:]...)
			if err != nil {
				return err
			}
			c, err := fleetClient()
			if err != nil {
				return err
			}
			res, err := c.SetAgentLabels(cmd.Context(), connect.NewRequest(&adminv1.SetAgentLabelsRequest{Id: args[0], Labels: l}))
			if err != nil {
				return fmt.Errorf("label agent %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s labels: %s\n", args[0], dash(labels.String(res.Msg.GetLabels())))
			return nil
		},
	}
}

// printFleetAgent writes the fleet lines of `agents describe`.
func printFleetAgent(cmd *cobra.Command, id string) {
	w := cmd.OutOrStdout()
	c, err := fleetClient()
	if err != nil {
		return
	}
	res, err := c.ListFleet(cmd.Context(), connect.NewRequest(&adminv1.ListFleetRequest{Id: id}))
	if err != nil || len(res.Msg.GetAgents()) != 1 {
		return
	}
	fa := res.Msg.GetAgents()[0]
	fmt.Fprintf(w, "version:    %s\n", dash(fa.GetVersion()))
	fmt.Fprintf(w, "labels:     %s\n", dash(labels.String(fa.GetLabels())))
	fmt.Fprintf(w, "config:     %s, %s\n", fleetConfig(fa), dash(fa.GetConfigState()))
	if fa.GetConfigError() != "" {
		fmt.Fprintf(w, "  error:    %s\n", fa.GetConfigError())
	}
	if fa.GetConfigConflict() != "" {
		fmt.Fprintf(w, "  conflict: %s\n", fa.GetConfigConflict())
	}
	if len(fa.GetRestarted()) > 0 && fa.GetConfigState() == "applied" {
		fmt.Fprintf(w, "  restarted by the last apply: %s\n", strings.Join(fa.GetRestarted(), ", "))
	}
	if fa.GetLastContact() != nil {
		oldest := "-"
		if fa.GetOldestPending() != nil {
			oldest = age(time.Now(), fa.GetOldestPending())
		}
		fmt.Fprintf(w, "backlog:    %d events (%d bytes) pending, oldest %s; last contact %s\n", fa.GetPendingEvents(), fa.GetPendingBytes(), oldest, fmtTime(fa.GetLastContact()))
	}
}
