// Package canonical holds the rules of the canonical event model that the agent and the
// control plane share: event types, validation, and deterministic event ids.
package canonical

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Event types, one per payload.
const (
	TypeItem           = "item"
	TypeInventoryLevel = "inventory.level"
	TypePrice          = "price"
	TypeOrder          = "order"
	TypeOrderAck       = "order.ack"
	TypeShipment       = "shipment"
	TypeInvoice        = "invoice"
	TypeSalesReturn    = "sales.return"
	TypeOrderCancel    = "order.cancel"
	TypeOrderStatus    = "order.status"
	// TypeEdiInterchange is an X12 interchange and its acknowledgement state (EDI connector).
	TypeEdiInterchange = "edi.interchange"
)

// Limits enforced on every event.
const (
	MaxIDLen        = 128
	MaxKeys         = 16
	MaxKeyLen       = 64
	MaxValueLen     = 256
	MaxEventBytes   = 256 << 10
	contentPosition = "sha256:"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid event")

// ErrIDConflict means an event carries an id that was published before with other
// content (Differs). It wraps ErrInvalid.
var ErrIDConflict = fmt.Errorf("%w: id conflict", ErrInvalid)

// TypeOf names the type implied by ev's payload, "" when it has none.
func TypeOf(ev *eventv1.Event) string {
	switch ev.GetPayload().(type) {
	case *eventv1.Event_Item:
		return TypeItem
	case *eventv1.Event_InventoryLevel:
		return TypeInventoryLevel
	case *eventv1.Event_Price:
		return TypePrice
	case *eventv1.Event_Order:
		return TypeOrder
	case *eventv1.Event_OrderAck:
		return TypeOrderAck
	case *eventv1.Event_Shipment:
		return TypeShipment
	case *eventv1.Event_Invoice:
		return TypeInvoice
	case *eventv1.Event_SalesReturn:
		return TypeSalesReturn
	case *eventv1.Event_OrderCancel:
		return TypeOrderCancel
	case *eventv1.Event_OrderStatus:
		return TypeOrderStatus
	case *eventv1.Event_EdiInterchange:
		return TypeEdiInterchange
	}
	return ""
}

// DefaultKeys returns the business keys implied by the payload (sku and location for an
// inventory level, order for an order, ...).
func DefaultKeys(ev *eventv1.Event) map[string]string {
	k := map[string]string{}
	eachDefaultKey(ev, func(name, v string) { k[name] = v })
	return k
}

// eachDefaultKey calls put for each non-empty business key implied by the payload.
func eachDefaultKey(ev *eventv1.Event, put func(name, v string)) {
	p := func(name, v string) {
		if v != "" {
			put(name, v)
		}
	}
	switch pl := ev.GetPayload().(type) {
	case *eventv1.Event_Item:
		p("sku", pl.Item.GetSku())
	case *eventv1.Event_InventoryLevel:
		p("sku", pl.InventoryLevel.GetSku())
		p("location", pl.InventoryLevel.GetLocation())
	case *eventv1.Event_Price:
		p("sku", pl.Price.GetSku())
	case *eventv1.Event_Order:
		p("order", pl.Order.GetOrderNumber())
	case *eventv1.Event_OrderAck:
		p("order", pl.OrderAck.GetOrderNumber())
	case *eventv1.Event_Shipment:
		p("shipment", pl.Shipment.GetShipmentNumber())
		p("order", pl.Shipment.GetOrderNumber())
	case *eventv1.Event_Invoice:
		p("invoice", pl.Invoice.GetInvoiceNumber())
		p("order", pl.Invoice.GetOrderNumber())
	case *eventv1.Event_SalesReturn:
		p("return", pl.SalesReturn.GetReturnNumber())
		p("order", pl.SalesReturn.GetOrderNumber())
	case *eventv1.Event_OrderCancel:
		p("order", pl.OrderCancel.GetOrderNumber())
	case *eventv1.Event_OrderStatus:
		p("order", pl.OrderStatus.GetOrderNumber())
		p("partner", pl.OrderStatus.GetPartner())
	}
}

// Normalize fills what a publisher may leave out: the type from the payload and the
// business keys implied by the payload (explicit keys win).
func Normalize(ev *eventv1.Event) {
	if ev.Type == "" {
		ev.Type = TypeOf(ev)
	}
	eachDefaultKey(ev, func(k, v string) {
		if ev.Keys == nil {
			ev.Keys = map[string]string{}
		}
		if _, ok := ev.Keys[k]; !ok {
			ev.Keys[k] = v
		}
	})
}

// Validate checks an event before it is accepted. Errors wrap ErrInvalid and name the
// field.
func Validate(ev *eventv1.Event) error {
	if err := ValidateFields(ev); err != nil {
		return err
	}
	return CheckSize(proto.Size(ev))
}

// CheckSize refuses an event whose encoding is n bytes when that is over MaxEventBytes.
// A caller that encodes the event anyway checks the encoding's length with it instead
// of having Validate compute the size again.
func CheckSize(n int) error {
	if n > MaxEventBytes {
		return fmt.Errorf("%w: event is %d bytes, more than %d", ErrInvalid, n, MaxEventBytes)
	}
	return nil
}

// ValidateFields is Validate without the size check (see CheckSize).
func ValidateFields(ev *eventv1.Event) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if ev == nil {
		return fail("event is empty")
	}
	want := TypeOf(ev)
	if want == "" {
		return fail("payload: one of item, inventoryLevel, price, order, orderAck, shipment, invoice, salesReturn, orderCancel, orderStatus, ediInterchange is required")
	}
	if ev.Type != want {
		return fail("type: %q does not match the %s payload (want %q)", ev.Type, want, want)
	}
	if len(ev.Id) > MaxIDLen {
		return fail("id: longer than %d characters", MaxIDLen)
	}
	if len(ev.Keys) > MaxKeys {
		return fail("keys: more than %d business keys", MaxKeys)
	}
	for k, v := range ev.Keys {
		if len(k) > MaxKeyLen || !IsKeyName(k) {
			return fail("keys: name %q must be lower_snake_case, at most %d characters", k, MaxKeyLen)
		}
		if v == "" || len(v) > MaxValueLen || strings.ContainsRune(v, 0) {
			return fail("keys.%s: value must be 1 to %d characters without NUL", k, MaxValueLen)
		}
	}
	if err := validatePayload(ev); err != nil {
		return fail("%s", err.Error())
	}
	return nil
}

// validatePayload checks the payload's required and decimal fields. It allocates only
// for the errors it reports: it runs for every event on the agent.
func validatePayload(ev *eventv1.Event) error {
	var errs []error
	dec := func(v string, required bool, field string, i ...any) {
		if v == "" && !required || IsDecimal(v) {
			return
		}
		errs = append(errs, fmt.Errorf("%s: %q is not a decimal number (digits, optional sign and fraction, e.g. \"12.50\")", fmt.Sprintf(field, i...), v))
	}
	req := func(v string, field string, i ...any) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required", fmt.Sprintf(field, i...)))
		}
	}
	switch p := ev.GetPayload().(type) {
	case *eventv1.Event_Item:
		req(p.Item.GetSku(), "item.sku")
	case *eventv1.Event_InventoryLevel:
		il := p.InventoryLevel
		req(il.GetSku(), "inventoryLevel.sku")
		req(il.GetLocation(), "inventoryLevel.location")
		dec(il.GetOnHand(), true, "inventoryLevel.onHand")
		dec(il.GetAllocated(), false, "inventoryLevel.allocated")
		dec(il.GetAvailable(), false, "inventoryLevel.available")
	case *eventv1.Event_Price:
		req(p.Price.GetSku(), "price.sku")
		dec(p.Price.GetAmount(), true, "price.amount")
	case *eventv1.Event_Order:
		req(p.Order.GetOrderNumber(), "order.orderNumber")
		dec(p.Order.GetTotal(), false, "order.total")
		for i, l := range p.Order.GetLines() {
			req(l.GetSku(), "order.lines[%d].sku", i)
			dec(l.GetQuantity(), true, "order.lines[%d].quantity", i)
			dec(l.GetUnitPrice(), false, "order.lines[%d].unitPrice", i)
		}
	case *eventv1.Event_OrderAck:
		req(p.OrderAck.GetOrderNumber(), "orderAck.orderNumber")
	case *eventv1.Event_Shipment:
		req(p.Shipment.GetShipmentNumber(), "shipment.shipmentNumber")
		for i, l := range p.Shipment.GetLines() {
			dec(l.GetQuantity(), true, "shipment.lines[%d].quantity", i)
		}
	case *eventv1.Event_Invoice:
		req(p.Invoice.GetInvoiceNumber(), "invoice.invoiceNumber")
		dec(p.Invoice.GetTotal(), false, "invoice.total")
	case *eventv1.Event_SalesReturn:
		req(p.SalesReturn.GetReturnNumber(), "salesReturn.returnNumber")
	case *eventv1.Event_OrderCancel:
		req(p.OrderCancel.GetOrderNumber(), "orderCancel.orderNumber")
	case *eventv1.Event_OrderStatus:
		req(p.OrderStatus.GetOrderNumber(), "orderStatus.orderNumber")
		req(p.OrderStatus.GetStatus(), "orderStatus.status")
	case *eventv1.Event_EdiInterchange:
		req(p.EdiInterchange.GetPartner(), "ediInterchange.partner")
		req(p.EdiInterchange.GetControl(), "ediInterchange.control")
		if d := p.EdiInterchange.GetDirection(); d != "in" && d != "out" {
			errs = append(errs, fmt.Errorf("ediInterchange.direction: %q must be in or out", d))
		}
	}
	errs = append(errs, validateEnriched(ev)...)
	return errors.Join(errs...)
}

// ID derives an event id from where it was captured: the same agent, connector and
// source position always give the same id, which is what lets the control plane drop a
// re-sent or re-published event.
func ID(agent, connector, position string) string {
	var in [256]byte
	b := append(append(append(in[:0], agent...), 0), connector...)
	b = append(append(append(b, 0), position...), 0)
	sum := sha256.Sum256(b)
	var out [3 + 32]byte
	copy(out[:], "ev_")
	hex.Encode(out[3:], sum[:16])
	return string(out[:])
}

// ContentPosition is the source position of an event that came without one: a hash of
// its content (id, source and trace context excluded), so publishing the same event
// twice yields the same id, whichever trace each publish belonged to.
func ContentPosition(ev *eventv1.Event) (string, error) {
	c := proto.CloneOf(ev)
	c.Id, c.Source, c.Trace = "", nil, nil
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("canonical: hash event content: %w", err)
	}
	sum := sha256.Sum256(b)
	return contentPosition + hex.EncodeToString(sum[:]), nil
}

// SortedKeys returns the names of m in order, for deterministic output.
func SortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ValidName reports whether n may name an agent or a control plane node: 1 to 64
// characters of a-z, 0-9, '-', '_' or '.'. Names end up in certificates, keys and logs.
func ValidName(n string) bool {
	if len(n) == 0 || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// isKeyName reports whether s matches ^[a-z][a-z0-9_]*$ (lower_snake_case). Hand-written
// because Validate runs for every event on the agent and again on the leader, where the
// regexp was a visible share of the CPU; FuzzMatchers holds it to the regexp.
func IsKeyName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// isDecimal reports whether s matches ^-?[0-9]+(\.[0-9]+)?$.
func IsDecimal(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	digits := func(s string) (n int) {
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		return n
	}
	n := digits(s)
	if n == 0 {
		return false
	}
	s = s[n:]
	if s == "" {
		return true
	}
	return s[0] == '.' && len(s) > 1 && digits(s[1:]) == len(s)-1
}
