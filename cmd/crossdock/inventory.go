package main

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// inventoryQuery is what `inventory get` asks; asPartner shows what that partner sees
// through the partner API (its locations, SKUs and allocation rule).
type inventoryQuery struct {
	skus, locations []string
	minSeq          uint64
	asPartner       string
}

func newInventoryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "inventory", Short: "Read inventory levels from the views the control plane keeps"}
	var q inventoryQuery
	get := &cobra.Command{
		Use:   "get --sku SKU [--sku SKU2] [--location LOC] [--min-seq N] [--as-partner P]",
		Short: "Show the newest level of SKUs per location, with the ledger seq and commit time it comes from",
		Long: `Show the newest inventory level of each SKU per location, as the node's views hold it:
every node (leader or follower) answers from its own views, which follow its ledger.
--min-seq waits (up to 10 s) until the views reflect at least that ledger seq: pass the
seq a write reported to read your own write. --as-partner P shows what partner P's
GetAvailability answers: only its SKUs and locations, AVAILABLE after its allocation
rule (ON HAND and ALLOCATED stay the warehouse's figures).`,
		Example: `  crossdock inventory get --sku A-100
  crossdock inventory get --sku A-100 --sku A-200 --location WH1 -o json
  crossdock inventory get --sku A-100 --as-partner demo-market`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := getInventory(cmd, q)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res)
			}
			tw := newTable(cmd.OutOrStdout(), "SKU", "LOCATION", "ON HAND", "ALLOCATED", "AVAILABLE", "SEQ", "AS OF")
			for _, l := range res.GetLevels() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", l.GetSku(), l.GetLocation(), dash(l.GetOnHand()), dash(l.GetAllocated()), dash(l.GetAvailable()), l.GetSeq(), fmtTime(l.GetCommittedAt()))
			}
			return tw.Flush()
		},
	}
	f := get.Flags()
	f.StringArrayVar(&q.skus, "sku", nil, "SKU to show (repeatable; at least one)")
	f.StringArrayVar(&q.locations, "location", nil, "location to show (repeatable; default: every location)")
	f.Uint64Var(&q.minSeq, "min-seq", 0, "wait until the views reflect at least this ledger seq")
	f.StringVar(&q.asPartner, "as-partner", "", "show what this partner sees (its SKUs and locations, available after its allocation rule)")
	cmd.AddCommand(get)
	return cmd
}

// getInventory asks the node for the levels of q.
func getInventory(cmd *cobra.Command, q inventoryQuery) (*adminv1.GetInventoryResponse, error) {
	if len(q.skus) == 0 {
		return nil, errors.New("give at least one --sku (e.g. crossdock inventory get --sku A-100)")
	}
	c, err := adminClient()
	if err != nil {
		return nil, err
	}
	res, err := c.GetInventory(cmd.Context(), connect.NewRequest(&adminv1.GetInventoryRequest{Skus: q.skus, Locations: q.locations, MinSeq: q.minSeq, AsPartner: q.asPartner}))
	if err != nil {
		return nil, fmt.Errorf("get inventory: %w", err)
	}
	return res.Msg, nil
}

func newPricesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "prices", Short: "Read prices from the views the control plane keeps"}
	var (
		skus   []string
		list   string
		minSeq uint64
	)
	get := &cobra.Command{
		Use:     "get --sku SKU [--sku SKU2] --price-list LIST [--min-seq N]",
		Short:   "Show the price of SKUs in a price list valid now",
		Example: `  crossdock prices get --sku A-100 --price-list retail`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(skus) == 0 || list == "" {
				return errors.New("give at least one --sku and the --price-list (e.g. crossdock prices get --sku A-100 --price-list retail)")
			}
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.GetPrices(cmd.Context(), connect.NewRequest(&adminv1.GetPricesRequest{Skus: skus, PriceList: list, MinSeq: minSeq}))
			if err != nil {
				return fmt.Errorf("get prices: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "SKU", "PRICE LIST", "CURRENCY", "AMOUNT", "VALID FROM", "VALID TO", "SEQ", "AS OF")
			for _, p := range res.Msg.GetPrices() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.GetSku(), p.GetPriceList(), dash(p.GetCurrency()), p.GetAmount(),
					fmtTime(p.GetValidFrom()), fmtTime(p.GetValidTo()), p.GetSeq(), fmtTime(p.GetCommittedAt()))
			}
			return tw.Flush()
		},
	}
	f := get.Flags()
	f.StringArrayVar(&skus, "sku", nil, "SKU to show (repeatable; at least one)")
	f.StringVar(&list, "price-list", "", "price list (required)")
	f.Uint64Var(&minSeq, "min-seq", 0, "wait until the views reflect at least this ledger seq")
	cmd.AddCommand(get)
	return cmd
}

// dash shows an empty field as "-".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
