package tryton

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// tagPrefix marks the sales the sink created: the sale's description is tagPrefix plus
// the event id, which is how a second write of the same event finds the first.
const tagPrefix = "crossdock:"

// Write creates one sales order per order event, quoted so Tryton gives it a number,
// and returns that number as the result's Ref. An event already written returns the
// existing sale's number and creates nothing.
func (c *Connector) Write(ctx context.Context, events []*eventv1.Event) ([]sdk.WriteResult, error) {
	if c.rpc == nil {
		return nil, fmt.Errorf("tryton: not configured")
	}
	out := make([]sdk.WriteResult, len(events))
	for i, ev := range events {
		ref, err := c.writeOrder(ctx, ev)
		var f *Fault
		if err != nil && !errors.Is(err, sdk.ErrPermanent) && !errors.As(err, &f) {
			// Tryton is unreachable or answered garbage: the rest would fail the same way.
			return nil, fmt.Errorf("write event %s: %w", ev.GetId(), err)
		}
		out[i] = sdk.WriteResult{EventID: ev.GetId(), Ref: ref, Err: err}
	}
	return out, nil
}

type saleRef struct {
	ID     int64   `json:"id"`
	Number tstring `json:"number"`
	State  tstring `json:"state"`
}

func (c *Connector) writeOrder(ctx context.Context, ev *eventv1.Event) (string, error) {
	o := ev.GetOrder()
	if o == nil {
		return "", sdk.Permanent(fmt.Errorf("the tryton sink writes order events; event %s is %q", ev.GetId(), ev.GetType()))
	}
	if ev.GetId() == "" {
		return "", sdk.Permanent(errors.New("event has no id; the sink needs it to write idempotently"))
	}
	tag := tagPrefix + ev.GetId()
	var found []saleRef
	if err := c.rpc.into(ctx, &found, "sale.sale", "search_read", nil,
		[]any{[]any{"description", "=", tag}}, 0, 1, [][]string{{"id", "ASC"}}, []string{"number", "state"}); err != nil {
		return "", fmt.Errorf("look for a sale of event %s: %w", ev.GetId(), err)
	}
	if len(found) == 1 {
		switch found[0].State {
		case "draft": // created but not quoted (the previous attempt stopped in between)
			return c.quote(ctx, found[0].ID, o)
		case "quotation": // quoted but not confirmed, or not to be confirmed
			return c.confirm(ctx, found[0].ID, string(found[0].Number), o)
		}
		return string(found[0].Number), nil
	}
	vals, err := c.saleValues(ctx, o, tag)
	if err != nil {
		return "", err
	}
	var ids []int64
	if err := c.rpc.into(ctx, &ids, "sale.sale", "create", nil, []any{vals}); err != nil {
		return "", c.dataError(fmt.Errorf("create sale for order %q: %w", o.GetOrderNumber(), err))
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("create sale for order %q: %w: got %d ids", o.GetOrderNumber(), ErrProtocol, len(ids))
	}
	return c.quote(ctx, ids[0], o)
}

// confirms says whether the sale for o is to be confirmed (settings confirm and
// confirm_partners).
func (c *Connector) confirms(o *eventv1.Order) bool {
	return c.cfg.Confirm || (o.GetPartner() != "" && slices.Contains(c.cfg.ConfirmPartners, o.GetPartner()))
}

// confirm confirms quotation id (number) when the settings say so. Tryton then
// processes it (shipments, invoices as the sale's methods say). A refusal (credit
// limit, a product that cannot be sold now) is permanent and names Tryton's reason; the
// quotation stays for a person to look at.
func (c *Connector) confirm(ctx context.Context, id int64, number string, o *eventv1.Order) (string, error) {
	if !c.confirms(o) {
		return number, nil
	}
	if _, err := c.rpc.model(ctx, "sale.sale", "confirm", nil, []int64{id}); err != nil {
		return "", c.dataError(fmt.Errorf("confirm sale %s for order %q: %w", number, o.GetOrderNumber(), err))
	}
	return number, nil
}

// quote moves a draft sale to quotation, which numbers it, then confirms it if told to.
// When Tryton refuses to quote (bad data), the draft is deleted so nothing half-made
// stays behind.
func (c *Connector) quote(ctx context.Context, id int64, o *eventv1.Order) (string, error) {
	order := o.GetOrderNumber()
	if _, err := c.rpc.model(ctx, "sale.sale", "quote", nil, []int64{id}); err != nil {
		var f *Fault
		if errors.As(err, &f) && f.UserFault() {
			if _, derr := c.rpc.model(ctx, "sale.sale", "delete", nil, []int64{id}); derr != nil {
				c.logger.Warn("tryton: could not delete the draft sale Tryton refused to quote", "sale_id", id, "err", derr)
			}
		}
		return "", c.dataError(fmt.Errorf("quote sale %d for order %q: %w", id, order, err))
	}
	var rows []saleRef
	if err := c.rpc.into(ctx, &rows, "sale.sale", "read", nil, []int64{id}, []string{"number", "state"}); err != nil {
		return "", fmt.Errorf("read sale %d: %w", id, err)
	}
	if len(rows) != 1 || rows[0].Number == "" {
		return "", fmt.Errorf("sale %d for order %q has no number after quotation", id, order)
	}
	return c.confirm(ctx, id, string(rows[0].Number), o)
}

// dataError marks Tryton's validation faults permanent: the same data fails again.
func (c *Connector) dataError(err error) error {
	var f *Fault
	if errors.As(err, &f) && f.UserFault() {
		return sdk.Permanent(err)
	}
	return err
}

type partyRow struct {
	ID        int64   `json:"id"`
	Addresses []int64 `json:"addresses"`
}

type productRow struct {
	ID        int64   `json:"id"`
	Code      tstring `json:"code"`
	Salable   tbool   `json:"salable"`
	SaleUoM   ref     `json:"sale_uom"`
	ListPrice tnumber `json:"list_price"`
	Name      tstring `json:"rec_name"`
}

// saleValues resolves the customer and products and builds the sale to create.
func (c *Connector) saleValues(ctx context.Context, o *eventv1.Order, tag string) (map[string]any, error) {
	customer := o.GetCustomer()
	if customer == "" {
		customer = o.GetPartner() // a partner's order: the partner is the customer
	}
	party, err := c.findParty(ctx, customer)
	if err != nil {
		return nil, err
	}
	if len(o.GetLines()) == 0 {
		return nil, sdk.Permanent(fmt.Errorf("order %q has no lines", o.GetOrderNumber()))
	}
	var codes []string
	for i, l := range o.GetLines() {
		if l.GetSku() == "" {
			return nil, sdk.Permanent(fmt.Errorf("order %q: lines[%d].sku is empty", o.GetOrderNumber(), i))
		}
		codes = append(codes, l.GetSku())
	}
	var prods []productRow
	if err := c.rpc.into(ctx, &prods, "product.product", "search_read", nil,
		[]any{[]any{"code", "in", codes}}, 0, nil, nil, []string{"code", "salable", "sale_uom", "list_price", "rec_name"}); err != nil {
		return nil, fmt.Errorf("look up products: %w", err)
	}
	byCode := map[string]productRow{}
	for _, p := range prods {
		byCode[string(p.Code)] = p
	}
	var lines []map[string]any
	for i, l := range o.GetLines() {
		p, ok := byCode[l.GetSku()]
		if !ok {
			return nil, sdk.Permanent(fmt.Errorf("order %q: lines[%d]: Tryton has no product with code %q", o.GetOrderNumber(), i, l.GetSku()))
		}
		if !p.Salable || p.SaleUoM == 0 {
			return nil, sdk.Permanent(fmt.Errorf("order %q: lines[%d]: product %q is not salable in Tryton", o.GetOrderNumber(), i, l.GetSku()))
		}
		q, err := strconv.ParseFloat(l.GetQuantity(), 64)
		if err != nil || q <= 0 || math.IsInf(q, 0) {
			return nil, sdk.Permanent(fmt.Errorf("order %q: lines[%d].quantity %q is not a positive number", o.GetOrderNumber(), i, l.GetQuantity()))
		}
		price := l.GetUnitPrice()
		if price == "" {
			price = string(p.ListPrice)
		}
		if _, err := strconv.ParseFloat(price, 64); err != nil {
			return nil, sdk.Permanent(fmt.Errorf("order %q: lines[%d]: no unit price (the event has none and product %q has no list price)", o.GetOrderNumber(), i, l.GetSku()))
		}
		lines = append(lines, map[string]any{"type": "line", "product": p.ID, "quantity": q, "unit": int64(p.SaleUoM),
			"unit_price": decimalArg(price), "description": string(p.Name)})
	}
	sale := map[string]any{
		"party": party.ID, "invoice_address": party.Addresses[0], "shipment_address": party.Addresses[0],
		"reference": o.GetOrderNumber(), "description": tag,
		"lines": []any{[]any{"create", lines}},
	}
	if m := c.cfg.InvoiceMethod; m != "" {
		sale["invoice_method"] = m
	}
	if code := o.GetCurrency(); code != "" {
		var cur []int64
		if err := c.rpc.into(ctx, &cur, "currency.currency", "search", nil, []any{[]any{"code", "=", code}}, 0, 1, nil); err != nil {
			return nil, fmt.Errorf("look up currency %q: %w", code, err)
		}
		if len(cur) == 0 {
			return nil, sdk.Permanent(fmt.Errorf("order %q: Tryton has no currency %q", o.GetOrderNumber(), code))
		}
		sale["currency"] = cur[0]
	}
	return sale, nil
}

// findParty finds the customer by party code, then by exact name.
func (c *Connector) findParty(ctx context.Context, customer string) (partyRow, error) {
	if customer == "" {
		return partyRow{}, sdk.Permanent(errors.New("order.customer and order.partner are empty; the sink needs the Tryton party code or name"))
	}
	for _, field := range []string{"code", "name"} {
		var rows []partyRow
		if err := c.rpc.into(ctx, &rows, "party.party", "search_read", nil,
			[]any{[]any{field, "=", customer}}, 0, 2, [][]string{{"id", "ASC"}}, []string{"addresses"}); err != nil {
			return partyRow{}, fmt.Errorf("look up party %q: %w", customer, err)
		}
		switch {
		case len(rows) > 1:
			return partyRow{}, sdk.Permanent(fmt.Errorf("customer %q matches several Tryton parties by %s; give the party code", customer, field))
		case len(rows) == 1:
			if len(rows[0].Addresses) == 0 {
				return partyRow{}, sdk.Permanent(fmt.Errorf("customer %q: the Tryton party has no address, which a quotation needs", customer))
			}
			return rows[0], nil
		}
	}
	return partyRow{}, sdk.Permanent(fmt.Errorf("customer %q: Tryton has no party with that code or name", customer))
}
