package main

import (
	"fmt"
	"io"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Read the committed event ledger"}
	var typ string
	var keys []string
	var from uint64
	var limit uint32
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List committed events, filtered by type and business keys",
		Example: "  crossdock events ls --key sku=A-100 --key location=WH-EAST\n  crossdock events ls --type inventory.level --from 5000 -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			km, err := parseKeys(keys)
			if err != nil {
				return err
			}
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.ListEvents(cmd.Context(), connect.NewRequest(&adminv1.ListEventsRequest{Type: typ, Keys: km, FromSeq: from, Limit: limit}))
			if err != nil {
				return fmt.Errorf("list events: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "SEQ", "TYPE", "KEYS", "OCCURRED", "AGENT", "ID")
			for _, ev := range res.Msg.GetEvents() {
				eventRow(tw, ev)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if n := res.Msg.GetNextSeq(); n != 0 && len(res.Msg.GetEvents()) == clampedLimit(limit) {
				cmd.PrintErrf("more: --from %d (ledger is at seq %d)\n", n, res.Msg.GetLastSeq())
			}
			return nil
		},
	}
	ls.Flags().StringVar(&typ, "type", "", "only this event type (inventory.level, order, shipment, ...)")
	ls.Flags().StringArrayVar(&keys, "key", nil, "only events with this business key, name=value (repeatable)")
	ls.Flags().Uint64Var(&from, "from", 0, "start at this ledger seq")
	ls.Flags().Uint32Var(&limit, "limit", 100, "at most this many events (max 10000)")

	var ttyp string
	var tkeys []string
	var tfrom uint64
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Follow events as they are committed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			km, err := parseKeys(tkeys)
			if err != nil {
				return err
			}
			c, err := adminClient()
			if err != nil {
				return err
			}
			stream, err := c.TailEvents(cmd.Context(), connect.NewRequest(&adminv1.TailEventsRequest{Type: ttyp, Keys: km, FromSeq: tfrom}))
			if err != nil {
				return fmt.Errorf("tail events: %w", err)
			}
			defer stream.Close()
			w := cmd.OutOrStdout()
			for stream.Receive() {
				ev := stream.Msg().GetEvent()
				if g.output == "table" {
					tw := newTable(io.Discard)
					tw.Init(w, 0, 4, 2, ' ', 0)
					eventRow(tw, ev)
					tw.Flush()
					continue
				}
				if err := printLine(w, ev); err != nil {
					return err
				}
			}
			if err := stream.Err(); err != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("tail events: %w", err)
			}
			return nil
		},
	}
	tail.Flags().StringVar(&ttyp, "type", "", "only this event type")
	tail.Flags().StringArrayVar(&tkeys, "key", nil, "only events with this business key, name=value (repeatable)")
	tail.Flags().Uint64Var(&tfrom, "from", 0, "start at this ledger seq (default: only new events)")
	cmd.AddCommand(ls, tail)
	return cmd
}

func clampedLimit(n uint32) int {
	if n == 0 {
		return 100
	}
	return int(min(n, 10000))
}

func eventRow(w io.Writer, ce *eventv1.CommittedEvent) {
	ev := ce.GetEvent()
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", ce.GetSeq(), ev.GetType(), fmtKeys(ev.GetKeys()), fmtTime(ev.GetOccurredAt()), ce.GetAgent(), ev.GetId())
}
