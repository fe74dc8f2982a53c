package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
)

// parseReplayFrom reads --from: a ledger seq, an RFC 3339 time, or a duration ago.
func parseReplayFrom(s string, now time.Time) (seq uint64, at *timestamppb.Timestamp, err error) {
	if s == "" {
		return 0, nil, errors.New("--from: required: a ledger seq (5000), a time (2026-11-27T08:00:00Z) or a duration ago (2h)")
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n == 0 {
			return 0, nil, errors.New("--from: seqs start at 1")
		}
		return n, nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return 0, timestamppb.New(t), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return 0, timestamppb.New(now.Add(-d)), nil
	}
	return 0, nil, fmt.Errorf("--from %q: want a ledger seq (5000), an RFC 3339 time (2026-11-27T08:00:00Z) or a duration ago (2h)", s)
}

func newReplayCmd() *cobra.Command {
	var route, from, dest string
	var keys []string
	var detach bool
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Send a route's committed events again (for a partner that lost data), with progress",
		Long: "Replay re-sends the committed events a route matches, from a seq or a time up to the\n" +
			"end of the ledger when it starts, through the destination's policy. Messages carry\n" +
			"their original idempotency key (the event id). Ctrl-C stops watching, not the replay.",
		Example: "  crossdock replay --route shop-stock --from 2h --key sku=A-100\n  crossdock replay --route shop-stock --from 120000",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if route == "" {
				return errors.New("--route: required")
			}
			seq, at, err := parseReplayFrom(from, time.Now())
			if err != nil {
				return err
			}
			km, err := parseKeys(keys)
			if err != nil {
				return err
			}
			c, err := deliveryClient()
			if err != nil {
				return err
			}
			stream, err := c.StartReplay(cmd.Context(), connect.NewRequest(&deliveryv1.StartReplayRequest{
				Route: route, FromSeq: seq, FromTime: at, Keys: km, Detach: detach, Destination: dest,
			}))
			if err != nil {
				if interrupted(cmd) {
					return replayInterrupted(cmd, nil)
				}
				return fmt.Errorf("replay: %w", err)
			}
			defer stream.Close()
			var last *deliveryv1.StartReplayResponse
			for stream.Receive() {
				p := stream.Msg()
				last = p
				if g.output != "table" {
					if err := printLine(cmd.OutOrStdout(), p); err != nil {
						return err
					}
					continue
				}
				span := p.GetToSeq() - p.GetFromSeq() + 1
				done := min(p.GetNextSeq()-p.GetFromSeq(), span)
				fmt.Fprintf(cmd.ErrOrStderr(), "replay %s to %s: seq %d..%d, %d%% scanned, %d sent, %d dead-lettered\n",
					p.GetReplayId(), p.GetDestination(), p.GetFromSeq(), p.GetToSeq(), done*100/max(span, 1), p.GetSent(), p.GetDeadLettered())
			}
			if interrupted(cmd) {
				return replayInterrupted(cmd, last)
			}
			if err := stream.Err(); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			if last != nil && g.output == "table" {
				if last.GetDone() {
					fmt.Fprintf(cmd.OutOrStdout(), "replay %s done: %d sent, %d dead-lettered\n", last.GetReplayId(), last.GetSent(), last.GetDeadLettered())
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "replay %s started; it goes on in the control plane\n", last.GetReplayId())
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&route, "route", "", "the route whose events to send again")
	cmd.Flags().StringVar(&from, "from", "", "start at a ledger seq, an RFC 3339 time, or a duration ago (2h)")
	cmd.Flags().StringArrayVar(&keys, "key", nil, "only events with this business key, name=value (repeatable)")
	cmd.Flags().StringVar(&dest, "destination", "", "the destination, when the route feeds several")
	cmd.Flags().BoolVar(&detach, "detach", false, "start the replay and return without following its progress")
	return cmd
}

// interrupted reports whether the command's context was cancelled: Ctrl-C (or SIGTERM).
func interrupted(cmd *cobra.Command) bool {
	return errors.Is(cmd.Context().Err(), context.Canceled)
}

// replayInterrupted says what Ctrl-C stopped (the watching, not the replay) and where the
// replay was, and ends the command with the status of an interrupted command (130).
func replayInterrupted(cmd *cobra.Command, last *deliveryv1.StartReplayResponse) error {
	w := cmd.ErrOrStderr()
	switch {
	case last == nil:
		fmt.Fprintln(w, "interrupted before the control plane confirmed the replay: it may have started, and then goes on in the control plane. Running the command again starts another replay (a partner deduplicating on webhook-id sees the same ids).")
	case last.GetDone():
		fmt.Fprintf(w, "interrupted; replay %s was already done: %d sent, %d dead-lettered\n", last.GetReplayId(), last.GetSent(), last.GetDeadLettered())
	default:
		fmt.Fprintf(w, "stopped watching replay %s to %s at seq %d of %d..%d (%d sent, %d dead-lettered); the replay goes on in the control plane (Ctrl-C stops only the watching)\n",
			last.GetReplayId(), last.GetDestination(), last.GetNextSeq(), last.GetFromSeq(), last.GetToSeq(), last.GetSent(), last.GetDeadLettered())
	}
	return &exitError{code: exitInterrupted}
}
