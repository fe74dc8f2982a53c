package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

func orderAdminClient() (adminv1connect.OrderAdminServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewOrderAdminServiceClient(hc, addr), nil
}

func newOrdersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "orders", Short: "Partner orders: their status and timeline"}
	var partner, status, page string
	var limit int32
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List orders, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := orderAdminClient()
			if err != nil {
				return err
			}
			res, err := c.ListOrders(cmd.Context(), connect.NewRequest(&adminv1.ListOrdersRequest{Partner: partner, Status: status, Limit: limit, PageToken: page}))
			if err != nil {
				return fmt.Errorf("list orders: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "ORDER", "PARTNER", "PO", "STATUS", "ERP NUMBER", "LINES", "SUBMITTED", "UPDATED", "SEQ")
			for _, o := range res.Msg.GetOrders() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", o.GetOrderId(), o.GetPartner(), o.GetPurchaseOrderNumber(), o.GetStatus(),
					dash(o.GetErpOrderNumber()), o.GetLines(), fmtTime(o.GetSubmittedAt()), fmtTime(o.GetUpdatedAt()), o.GetLastSeq())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if t := res.Msg.GetNextPageToken(); t != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "\nmore: crossdock orders ls --page %s\n", t)
			}
			return nil
		},
	}
	ls.Flags().StringVar(&partner, "partner", "", "only this partner's orders")
	ls.Flags().StringVar(&status, "status", "", "only orders in this status (received, accepted, rejected, partially_shipped, shipped, invoiced, cancel_requested, cancelled, return_requested)")
	ls.Flags().Int32Var(&limit, "limit", 100, "at most this many orders (1 to 1000)")
	ls.Flags().StringVar(&page, "page", "", "the page token a previous ls printed")
	cmd.AddCommand(ls)
	cmd.AddCommand(&cobra.Command{
		Use:   "describe ID",
		Short: "Show an order (by Crossdock id or ERP number) and its timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := orderAdminClient()
			if err != nil {
				return err
			}
			res, err := c.DescribeOrder(cmd.Context(), connect.NewRequest(&adminv1.DescribeOrderRequest{OrderId: args[0]}))
			if err != nil {
				return fmt.Errorf("describe order %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			w := cmd.OutOrStdout()
			o := res.Msg.GetOrder()
			fmt.Fprintf(w, "Order:     %s\nPartner:   %s (PO %s)\nStatus:    %s\nERP:       %s\n", o.GetOrderId(), o.GetPartner(), o.GetPurchaseOrderNumber(), o.GetStatus(), dash(o.GetErpOrderNumber()))
			if o.GetMessage() != "" {
				fmt.Fprintf(w, "Message:   %s\n", o.GetMessage())
			}
			fmt.Fprintf(w, "Told:      %s\n", dash(o.GetNotifiedStatus()))
			fmt.Fprintln(w, "\nLines:")
			tw := newTable(w, "  LINE", "SKU", "QUANTITY", "UNIT PRICE")
			for _, l := range res.Msg.GetEvent().GetOrder().GetLines() {
				fmt.Fprintf(tw, "  %s\t%s\t%s %s\t%s\n", l.GetLineNumber(), l.GetSku(), l.GetQuantity(), l.GetUnitOfMeasure(), dash(l.GetUnitPrice()))
			}
			_ = tw.Flush()
			fmt.Fprintln(w, "\nTimeline:")
			tw = newTable(w, "  STEP", "STATUS", "AT", "SEQ", "DETAIL")
			for _, e := range res.Msg.GetTimeline() {
				seq := "-"
				if e.GetSeq() > 0 {
					seq = fmt.Sprint(e.GetSeq())
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.GetStep(), dash(e.GetStatus()), fmtTime(e.GetAt()), seq, e.GetDetail())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// An order that came or goes by EDI: its X12 chain with acknowledgement states.
			if ec, err := ediClient(); err == nil {
				chain, err := ec.GetOrderEDI(cmd.Context(), connect.NewRequest(&adminv1.GetOrderEDIRequest{Order: o.GetOrderId()}))
				if err == nil && len(chain.Msg.GetSteps()) > 0 {
					fmt.Fprintln(w, "\nEDI:")
					return printEDIChain(w, "  ", chain.Msg.GetSteps())
				}
			}
			return nil
		},
	})
	return cmd
}
