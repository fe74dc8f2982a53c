package edi

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// KeyInterchange is the business key of edi.interchange events: partner, direction
// and ISA13 ("bigbox:out:101"), so the states of one interchange keep their order.
const KeyInterchange = "edi_interchange"

// interchangeEvent is the edi.interchange event of e as it is now: the whole state of
// the interchange, published when it is received or sent and whenever its
// acknowledgement state changes. Its id is derived from the partner, direction, ISA13
// and a digest of the content, so publishing the same state again (a file re-read
// after a kill) gives the same event, which the ledger deduplicates, and a new state
// gives a new event, which the control plane's view puts in place of the old one.
func interchangeEvent(e *Entry) *eventv1.Event {
	ic := &eventv1.EdiInterchange{Partner: e.Partner, Direction: e.Direction, Control: e.Control, File: e.File,
		Status: e.Status, Reason: e.Reason, AckControl: e.AckControl, Ta1: e.TA1, At: ts(e.At)}
	orders := map[string]bool{}
	for _, g := range e.Groups {
		eg := &eventv1.EdiGroup{FunctionalId: g.FunctionalID, Control: g.Control, Version: g.Version,
			Ack: g.Ack, AckKind: g.AckKind, AckAt: ts(g.AckAt), AckDue: ts(g.AckDue)}
		for _, s := range g.Sets {
			eg.Sets = append(eg.Sets, &eventv1.EdiSet{Id: s.ID, Control: s.Control, PurchaseOrderNumber: s.PO,
				Order: s.Order, Status: s.Status, Event: s.Event})
			if s.Order != "" {
				orders[s.Order] = true
			}
		}
		ic.Groups = append(ic.Groups, eg)
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(ic) // plain message: always marshals
	sum := sha256.Sum256(b)
	key := e.Partner + ":" + e.Direction + ":" + normControl(e.Control)
	ev := &eventv1.Event{
		Id:         "edi:" + key + ":" + hex.EncodeToString(sum[:8]),
		Type:       canonical.TypeEdiInterchange,
		Keys:       map[string]string{KeyInterchange: key},
		OccurredAt: ts(e.At),
		Payload:    &eventv1.Event_EdiInterchange{EdiInterchange: ic},
	}
	if len(orders) == 1 {
		for o := range orders {
			ev.Keys["order"] = o
		}
	}
	return ev
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
