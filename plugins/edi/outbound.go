package edi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/internal/platform/fsutil"
	"github.com/crossdock/crossdock/internal/x12"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Ack implements sdk.Source; files are moved once their batch is durable, in Read.
func (c *Connector) Ack(context.Context, string) error { return nil }

// Write implements sdk.Sink: order.ack → 855, shipment → 856, invoice → 810 to the
// partner named in the event; inventory levels → one 846 per partner whose profile
// sends 846. Idempotent by event id: what was sent for an event is kept in
// state_dir/sent/, and a second write sends the same bytes again only if the first
// did not finish.
func (c *Connector) Write(ctx context.Context, events []*eventv1.Event) ([]sdk.WriteResult, error) {
	out := make([]sdk.WriteResult, len(events))
	var levels []*eventv1.InventoryLevel
	var levelIdx []int
	for i, ev := range events {
		out[i].EventID = ev.GetId()
		var (
			set     *x12.Set
			partner string
			ref     string
			err     error
		)
		switch p := ev.GetPayload().(type) {
		case *eventv1.Event_OrderAck:
			a := proto.Clone(p.OrderAck).(*eventv1.OrderAck)
			if r, ok := c.loadOrderRef(a.GetOrderNumber()); ok {
				a.Partner, a.PurchaseOrderNumber = or(a.Partner, r.Partner), or(a.PurchaseOrderNumber, r.PO)
				if a.OrderDate == nil && !r.Date.IsZero() {
					a.OrderDate = timestamppb.New(r.Date)
				}
			}
			partner, ref = a.GetPartner(), a.GetPurchaseOrderNumber()
			set, err = edi.Build855(a)
		case *eventv1.Event_Shipment:
			sh := proto.Clone(p.Shipment).(*eventv1.Shipment)
			if r, ok := c.loadOrderRef(sh.GetOrderNumber()); ok {
				sh.Partner, sh.PurchaseOrderNumber = or(sh.Partner, r.Partner), or(sh.PurchaseOrderNumber, r.PO)
			}
			partner, ref = sh.GetPartner(), sh.GetPurchaseOrderNumber()
			set, err = edi.Build856(sh)
		case *eventv1.Event_Invoice:
			inv := proto.Clone(p.Invoice).(*eventv1.Invoice)
			if r, ok := c.loadOrderRef(inv.GetOrderNumber()); ok {
				inv.Partner, inv.PurchaseOrderNumber = or(inv.Partner, r.Partner), or(inv.PurchaseOrderNumber, r.PO)
			}
			partner, ref = inv.GetPartner(), inv.GetPurchaseOrderNumber()
			set, err = edi.Build810(inv)
		case *eventv1.Event_InventoryLevel:
			levels, levelIdx = append(levels, p.InventoryLevel), append(levelIdx, i)
			continue
		default:
			out[i].Err = sdk.Permanent(fmt.Errorf("edi: event type %s has no X12 set (route order.ack, shipment, invoice and inventory levels here)", ev.GetType()))
			continue
		}
		if err != nil {
			out[i].Err = sdk.Permanent(err)
			continue
		}
		prof, perr := c.profileFor(partner, set.ID)
		if perr != nil {
			out[i].Err = perr
			continue
		}
		name, err := c.send(ctx, ev.GetId(), prof, []*x12.Set{set}, ref, ev.GetId(), orderNumber(ev))
		if err != nil {
			if errors.Is(err, sdk.ErrPermanent) {
				out[i].Err = err
				continue
			}
			return nil, err
		}
		out[i].Ref = name
	}
	if len(levels) > 0 {
		if err := c.write846(ctx, events, levels, levelIdx, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// orderNumber is the Crossdock order id an outbound event belongs to.
func orderNumber(ev *eventv1.Event) string {
	switch p := ev.GetPayload().(type) {
	case *eventv1.Event_OrderAck:
		return p.OrderAck.GetOrderNumber()
	case *eventv1.Event_Shipment:
		return p.Shipment.GetOrderNumber()
	case *eventv1.Event_Invoice:
		return p.Invoice.GetOrderNumber()
	}
	return ev.GetKeys()["order"]
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *Connector) profileFor(partner, set string) (*edi.Profile, error) {
	if partner == "" {
		return nil, sdk.Permanent(fmt.Errorf("edi: the event names no partner, so there is no trading partner to send the %s to", set))
	}
	p := c.byName[partner]
	if p == nil {
		return nil, sdk.Permanent(fmt.Errorf("edi: no trading partner profile for partner %q in this connector's partners", partner))
	}
	if !p.Sends(set) {
		return nil, sdk.Permanent(fmt.Errorf("edi: the profile of %s does not send %s (add it to outbound)", partner, set))
	}
	return p, nil
}

// write846 sends the levels of a batch as one 846 per partner that takes them.
func (c *Connector) write846(ctx context.Context, events []*eventv1.Event, levels []*eventv1.InventoryLevel, idx []int, out []sdk.WriteResult) error {
	h := sha256.New()
	for _, i := range idx {
		h.Write([]byte(events[i].GetId()))
		h.Write([]byte{0})
	}
	key := "846:" + hex.EncodeToString(h.Sum(nil))[:24]
	var at time.Time
	if ts := events[idx[len(idx)-1]].GetOccurredAt(); ts != nil {
		at = ts.AsTime()
	} else {
		at = c.now()
	}
	// One level per SKU: the last one of the batch wins.
	bySKU := map[string]int{}
	var uniq []*eventv1.InventoryLevel
	for _, l := range levels {
		if j, ok := bySKU[l.GetSku()]; ok {
			uniq[j] = l
			continue
		}
		bySKU[l.GetSku()] = len(uniq)
		uniq = append(uniq, l)
	}
	names := ""
	for i := range c.s.Partners {
		p := &c.s.Partners[i]
		if !p.Sends("846") {
			continue
		}
		set, err := edi.Build846(key[4:14], at, uniq)
		if err != nil {
			for _, i := range idx {
				out[i].Err = sdk.Permanent(err)
			}
			return nil
		}
		name, err := c.send(ctx, key+":"+p.Partner, p, []*x12.Set{set}, "", "", "")
		if err != nil {
			if errors.Is(err, sdk.ErrPermanent) {
				for _, i := range idx {
					out[i].Err = err
				}
				return nil
			}
			return err
		}
		names += name + " "
	}
	for _, i := range idx {
		out[i].Ref = names
	}
	return nil
}

// send writes sets to a partner once per key: the bytes (with committed control
// numbers) and the edi.interchange event saying they were sent are first kept in
// state_dir/sent/KEY.x12 and KEY.event, the event is committed to the outbox, the
// file put on the transport, then KEY.done is written. A retry finds the bytes and the
// event and publishes and puts the same again.
func (c *Connector) send(ctx context.Context, key string, p *edi.Profile, sets []*x12.Set, ref, eventID, order string) (string, error) {
	dir := filepath.Join(c.s.StateDir, "sent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("edi: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	base := hex.EncodeToString(sum[:12])
	if _, err := os.Stat(filepath.Join(dir, base+".done")); err == nil {
		b, _ := os.ReadFile(filepath.Join(dir, base+".name"))
		return string(b), nil
	}
	data, err := os.ReadFile(filepath.Join(dir, base+".x12"))
	name := ""
	var sentEv *eventv1.Event
	if err == nil {
		nb, _ := os.ReadFile(filepath.Join(dir, base+".name"))
		name = string(nb)
		if eb, err := os.ReadFile(filepath.Join(dir, base+".event")); err == nil {
			sentEv = &eventv1.Event{}
			if err := proto.Unmarshal(eb, sentEv); err != nil {
				return "", fmt.Errorf("edi: %s is damaged (%v); remove it and its .x12 to send again", base+".event", err)
			}
		}
	} else {
		n, err := c.allocCommitted(ctx, p.Partner, 1+1)
		if err != nil {
			return "", err
		}
		sender, receiver := p.AppCodes()
		ic, err := edi.Wrap(p.Header(), sender, receiver, p.Version, c.now(), sets...)
		if err != nil {
			return "", sdk.Permanent(err)
		}
		var buf bytes.Buffer
		if err := x12.NewWriter(&buf, p.Delimiters(), newFixed(n)).Write(ic); err != nil {
			return "", sdk.Permanent(fmt.Errorf("edi: write %s for %s: %w", sets[0].ID, p.Partner, err))
		}
		data = buf.Bytes()
		name = fmt.Sprintf("%s-%s-%09d.x12", p.Partner, sets[0].ID, n)
		if err := fsutil.WriteFileAtomic(dir, base+".name", []byte(name), 0o600); err != nil {
			return "", fmt.Errorf("edi: %w", err)
		}
		e := &Entry{Partner: p.Partner, Direction: "out", Control: ic.Header.Control, File: name,
			Archive: filepath.Join("sent", base+".x12"), At: c.now().Truncate(time.Millisecond), Status: "sent"}
		for _, g := range ic.Groups {
			ge := GroupEntry{FunctionalID: g.FunctionalID, Control: g.Control, Version: g.Version}
			if d := p.Overdue(); d > 0 {
				ge.AckDue = e.At.Add(d)
			}
			for _, s := range g.Sets {
				ge.Sets = append(ge.Sets, SetEntry{ID: s.ID, Control: s.Control, Ref: ref, PO: ref, Order: order, Event: eventID})
			}
			e.Groups = append(e.Groups, ge)
		}
		if err := c.writeJournal(e); err != nil {
			return "", err
		}
		sentEv = interchangeEvent(e)
		eb, _ := proto.Marshal(sentEv) // a well-formed event always marshals
		if err := fsutil.WriteFileAtomic(dir, base+".event", eb, 0o600); err != nil {
			return "", fmt.Errorf("edi: %w", err)
		}
		// The bytes last: a retry that finds them finds the event too.
		if err := fsutil.WriteFileAtomic(dir, base+".x12", data, 0o600); err != nil {
			return "", fmt.Errorf("edi: %w", err)
		}
	}
	if sentEv != nil {
		if err := c.publish(ctx, sentEv); err != nil {
			return "", err
		}
	}
	if err := c.tr.Put(ctx, name, data); err != nil {
		return "", err
	}
	if err := fsutil.WriteFileAtomic(dir, base+".done", nil, 0o600); err != nil {
		return "", fmt.Errorf("edi: %w", err)
	}
	c.log.Info("edi sent", "partner", p.Partner, "file", name, "set", sets[0].ID, "ref", ref)
	return name, nil
}
