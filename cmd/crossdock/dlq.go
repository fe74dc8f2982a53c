package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
)

func deliveryClient() (deliveryv1connect.DeliveryServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, base, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return deliveryv1connect.NewDeliveryServiceClient(hc, base), nil
}

func stateText(s deliveryv1.DeadLetterState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DEAD_LETTER_STATE_"))
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func newDlqCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Dead letters: messages a destination refused or that could not be mapped"}
	cmd.AddCommand(newDlqLsCmd(), newDlqShowCmd(), newDlqRetryCmd())
	return cmd
}

// newDlqLsCmd is `crossdock dlq ls`.
func newDlqLsCmd() *cobra.Command {
	var dest, route, errText string
	var keys []string
	var all bool
	var limit uint32
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List open dead letters, newest first",
		Example: "  crossdock dlq ls --destination shop --key sku=A-100\n  crossdock dlq ls --error 'HTTP 422' -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			km, err := parseKeys(keys)
			if err != nil {
				return err
			}
			c, err := deliveryClient()
			if err != nil {
				return err
			}
			res, err := c.ListDeadLetters(cmd.Context(), connect.NewRequest(&deliveryv1.ListDeadLettersRequest{
				Destination: dest, Route: route, Keys: km, ErrorContains: errText, IncludeDelivered: all, Limit: limit,
			}))
			if err != nil {
				return fmt.Errorf("list dead letters: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "DESTINATION", "ROUTE", "SEQ", "KEYS", "STATE", "ATTEMPTS", "CREATED", "ERROR")
			for _, d := range res.Msg.GetDeadLetters() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", d.GetId(), d.GetDestination(), d.GetRoute(), d.GetSeq(),
					fmtKeys(d.GetKeys()), stateText(d.GetState()), d.GetAttemptCount(), fmtTime(d.GetCreatedAt()), oneLine(d.GetError(), 80))
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&dest, "destination", "", "only this destination")
	ls.Flags().StringVar(&route, "route", "", "only this route")
	ls.Flags().StringArrayVar(&keys, "key", nil, "only dead letters with this business key, name=value (repeatable)")
	ls.Flags().StringVar(&errText, "error", "", "only dead letters whose error contains this text (case-insensitive)")
	ls.Flags().BoolVar(&all, "all", false, "include dead letters a retry delivered")
	ls.Flags().Uint32Var(&limit, "limit", 100, "at most this many (max 10000)")
	return ls
}

// newDlqShowCmd is `crossdock dlq show ID`.
func newDlqShowCmd() *cobra.Command {
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a dead letter: its payload and every attempt with status and response",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := deliveryClient()
			if err != nil {
				return err
			}
			res, err := c.GetDeadLetter(cmd.Context(), connect.NewRequest(&deliveryv1.GetDeadLetterRequest{Id: args[0]}))
			if err != nil {
				return fmt.Errorf("show dead letter: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			d := res.Msg.GetDeadLetter()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "ID:           %s\nState:        %s\nDestination:  %s\nRoute:        %s\nEvent:        seq %d, %s (%s)\nKeys:         %s\nMessage id:   %s\nCreated:      %s\nUpdated:      %s\nError:        %s\n",
				d.GetId(), stateText(d.GetState()), d.GetDestination(), d.GetRoute(), d.GetSeq(), d.GetEventId(), d.GetEventType(),
				fmtKeys(d.GetKeys()), d.GetMessageId(), fmtTime(d.GetCreatedAt()), fmtTime(d.GetUpdatedAt()), d.GetError())
			if d.GetReplayId() != "" {
				fmt.Fprintf(w, "Replay:       %s\n", d.GetReplayId())
			}
			fmt.Fprintln(w, "Payload:")
			if len(d.GetPayload()) == 0 {
				fmt.Fprintln(w, "  (none: the mapping failed)")
			} else {
				var pretty bytes.Buffer
				if json.Indent(&pretty, d.GetPayload(), "  ", "  ") == nil {
					fmt.Fprintf(w, "  %s\n", pretty.String())
				} else {
					fmt.Fprintf(w, "  %s\n", d.GetPayload())
				}
			}
			fmt.Fprintf(w, "Attempts (%d):\n", len(d.GetAttempts()))
			tw := newTable(w, "  AT", "STATUS", "TOOK", "ERROR / RESPONSE")
			for _, a := range d.GetAttempts() {
				status := "-"
				if a.GetStatus() != 0 {
					status = fmt.Sprint(a.GetStatus())
				}
				detail := a.GetError()
				if detail == "" {
					detail = a.GetResponse()
				}
				fmt.Fprintf(tw, "  %s\t%s\t%.1fms\t%s\n", fmtTime(a.GetAt()), status, float64(a.GetDurationMicros())/1000, oneLine(detail, 100))
			}
			return tw.Flush()
		},
	}
	return show
}

// newDlqRetryCmd is `crossdock dlq retry`.
func newDlqRetryCmd() *cobra.Command {
	var rAll bool
	var rDest string
	retry := &cobra.Command{
		Use:     "retry [ID]",
		Short:   "Send dead letters again (the route is evaluated again, so a fixed mapping applies)",
		Example: "  crossdock dlq retry dl_4f2a9c0e1b7d3a5c6e8f\n  crossdock dlq retry --all --destination shop",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &deliveryv1.RetryDeadLettersRequest{All: rAll, Destination: rDest}
			switch {
			case len(args) == 1 && rAll:
				return errors.New("give an ID or --all --destination D, not both")
			case len(args) == 1:
				req.Id = args[0]
			case !rAll || rDest == "":
				return errors.New("give a dead letter ID, or --all --destination D to retry every open dead letter of a destination")
			}
			c, err := deliveryClient()
			if err != nil {
				return err
			}
			res, err := c.RetryDeadLetters(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("retry dead letters: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d dead letter(s) queued for retry; follow with crossdock dlq ls --all\n", res.Msg.GetRetrying())
			return nil
		},
	}
	retry.Flags().BoolVar(&rAll, "all", false, "every open dead letter of --destination")
	retry.Flags().StringVar(&rDest, "destination", "", "the destination for --all")
	return retry
}
