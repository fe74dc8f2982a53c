package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	deliveryv1 "github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1"
)

// withDestinationsStatus adds `status` to the destinations command.
func withDestinationsStatus(cmd *cobra.Command) *cobra.Command {
	cmd.AddCommand(newDestinationsStatusCmd())
	return cmd
}

func newDestinationsStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each destination's delivery cursor, lag, circuit breaker, queue and dead letters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := deliveryClient()
			if err != nil {
				return err
			}
			res, err := c.GetDeliveryStatus(cmd.Context(), connect.NewRequest(&deliveryv1.GetDeliveryStatusRequest{}))
			if err != nil {
				return fmt.Errorf("delivery status: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "DESTINATION", "KIND", "CURSOR", "LAG", "BREAKER", "QUEUED", "IN-FLIGHT", "DELIVERED", "COALESCED", "DEAD", "OPEN-DLQ", "LAST ERROR")
			for _, d := range res.Msg.GetDestinations() {
				breaker := d.GetBreaker()
				if !d.GetActive() {
					breaker = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", d.GetDestination(), d.GetKind(), d.GetCursor(), d.GetLag(),
					breaker, d.GetQueued(), d.GetInFlight(), d.GetDelivered(), d.GetCoalesced(), d.GetDeadLettered(), d.GetOpenDeadLetters(), oneLine(d.GetLastError(), 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			cmd.PrintErrf("ledger at seq %d\n", res.Msg.GetLastSeq())
			return nil
		},
	}
}
