package wire

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// AppendEvent appends ev's protobuf encoding to b: the bytes proto.Marshal writes, up
// to the order of map entries (which proto.Marshal does not fix either). The agent
// encodes every event it publishes, and proto.Marshal's reflection-driven walk, with
// its size pass and the map, was a fifth of the agent's CPU under load; this writes the
// fields directly, into one buffer for a whole batch. TestAppendEventEveryField fills
// every field of every message through protobuf reflection, so a field added to the
// schema and not here fails the tests.
func AppendEvent(b []byte, ev *eventv1.Event) []byte {
	b = appendString(b, 1, ev.Id)
	b = appendString(b, 2, ev.Type)
	for k, v := range ev.Keys {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(1)+protowire.SizeBytes(len(k))+protowire.SizeTag(2)+protowire.SizeBytes(len(v))))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	b = appendTimestamp(b, 4, ev.OccurredAt)
	if s := ev.Source; s != nil {
		b = appendMessage(b, 5, s, func(b []byte) []byte {
			b = appendString(b, 1, s.Agent)
			b = appendString(b, 2, s.Connector)
			return appendString(b, 3, s.Position)
		})
	}
	if t := ev.Trace; t != nil {
		b = appendMessage(b, 6, t, func(b []byte) []byte {
			b = appendString(b, 1, t.Traceparent)
			return appendString(b, 2, t.Tracestate)
		})
	}
	switch p := ev.Payload.(type) {
	case *eventv1.Event_Item:
		m := p.Item
		b = appendMessage(b, 10, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetSku())
			b = appendString(b, 2, m.GetName())
			b = appendString(b, 3, m.GetDescription())
			b = appendString(b, 4, m.GetUnitOfMeasure())
			return appendString(b, 5, m.GetGtin())
		})
	case *eventv1.Event_InventoryLevel:
		m := p.InventoryLevel
		b = appendMessage(b, 11, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetSku())
			b = appendString(b, 2, m.GetLocation())
			b = appendString(b, 3, m.GetOnHand())
			b = appendString(b, 4, m.GetAllocated())
			b = appendString(b, 5, m.GetAvailable())
			return appendString(b, 6, m.GetUnitOfMeasure())
		})
	case *eventv1.Event_Price:
		m := p.Price
		b = appendMessage(b, 12, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetSku())
			b = appendString(b, 2, m.GetPriceList())
			b = appendString(b, 3, m.GetCurrency())
			b = appendString(b, 4, m.GetAmount())
			b = appendTimestamp(b, 5, m.GetValidFrom())
			return appendTimestamp(b, 6, m.GetValidTo())
		})
	case *eventv1.Event_Order:
		m := p.Order
		b = appendMessage(b, 13, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetOrderNumber())
			b = appendString(b, 2, m.GetChannel())
			b = appendString(b, 3, m.GetCustomer())
			b = appendString(b, 4, m.GetStatus())
			b = appendString(b, 5, m.GetCurrency())
			b = appendString(b, 6, m.GetTotal())
			for _, l := range m.GetLines() {
				b = appendMessage(b, 7, l, func(b []byte) []byte {
					b = appendString(b, 1, l.GetLineNumber())
					b = appendString(b, 2, l.GetSku())
					b = appendString(b, 3, l.GetQuantity())
					b = appendString(b, 4, l.GetUnitPrice())
					b = appendString(b, 5, l.GetPartnerItemId())
					b = appendString(b, 6, l.GetGtin())
					b = appendString(b, 7, l.GetUnitOfMeasure())
					return appendString(b, 8, l.GetDescription())
				})
			}
			b = appendString(b, 8, m.GetPartner())
			b = appendString(b, 9, m.GetPurchaseOrderNumber())
			b = appendTimestamp(b, 10, m.GetOrderDate())
			b = appendTimestamp(b, 11, m.GetRequestedShipDate())
			b = appendParty(b, 12, m.GetShipTo())
			b = appendParty(b, 13, m.GetBillTo())
			b = appendString(b, 14, m.GetNotes())
			b = appendTimestamp(b, 15, m.GetRequestedDeliveryDate())
			return appendString(b, 50, m.GetFulfillmentLocation())
		})
	case *eventv1.Event_OrderAck:
		m := p.OrderAck
		b = appendMessage(b, 14, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetOrderNumber())
			b = appendString(b, 2, m.GetErpOrderNumber())
			b = appendString(b, 3, m.GetStatus())
			b = appendString(b, 4, m.GetMessage())
			for _, l := range m.GetLines() {
				b = appendMessage(b, 5, l, func(b []byte) []byte {
					b = appendString(b, 1, l.GetLineNumber())
					b = appendString(b, 2, l.GetSku())
					b = appendString(b, 3, l.GetStatus())
					b = appendString(b, 4, l.GetQuantity())
					b = appendString(b, 5, l.GetUnitOfMeasure())
					b = appendString(b, 6, l.GetReason())
					b = appendString(b, 7, l.GetPartnerItemId())
					b = appendString(b, 8, l.GetGtin())
					b = appendString(b, 9, l.GetUnitPrice())
					return appendTimestamp(b, 10, l.GetExpectedShipDate())
				})
			}
			b = appendString(b, 6, m.GetPartner())
			b = appendString(b, 7, m.GetPurchaseOrderNumber())
			b = appendTimestamp(b, 8, m.GetAcknowledgedAt())
			return appendTimestamp(b, 9, m.GetOrderDate())
		})
	case *eventv1.Event_Shipment:
		m := p.Shipment
		b = appendMessage(b, 15, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetShipmentNumber())
			b = appendString(b, 2, m.GetOrderNumber())
			b = appendString(b, 3, m.GetCarrier())
			b = appendString(b, 4, m.GetTrackingNumber())
			b = appendString(b, 5, m.GetStatus())
			b = appendTimestamp(b, 6, m.GetShippedAt())
			b = appendShipmentLines(b, 7, m.GetLines())
			b = appendParty(b, 8, m.GetShipFrom())
			b = appendParty(b, 9, m.GetShipTo())
			b = appendString(b, 10, m.GetCarrierScac())
			b = appendString(b, 11, m.GetServiceLevel())
			for _, pk := range m.GetPackages() {
				b = appendMessage(b, 12, pk, func(b []byte) []byte {
					b = appendString(b, 1, pk.GetSscc())
					b = appendString(b, 2, pk.GetMarks())
					b = appendString(b, 3, pk.GetWeight())
					b = appendString(b, 4, pk.GetWeightUnit())
					return appendShipmentLines(b, 5, pk.GetLines())
				})
			}
			b = appendString(b, 13, m.GetPartner())
			b = appendString(b, 14, m.GetPurchaseOrderNumber())
			b = appendString(b, 15, m.GetBillOfLading())
			b = appendString(b, 16, m.GetWeight())
			b = appendString(b, 17, m.GetWeightUnit())
			return appendTimestamp(b, 18, m.GetExpectedDelivery())
		})
	case *eventv1.Event_Invoice:
		m := p.Invoice
		b = appendMessage(b, 16, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetInvoiceNumber())
			b = appendString(b, 2, m.GetOrderNumber())
			b = appendString(b, 3, m.GetCurrency())
			b = appendString(b, 4, m.GetTotal())
			for _, l := range m.GetLines() {
				b = appendMessage(b, 5, l, func(b []byte) []byte {
					b = appendString(b, 1, l.GetLineNumber())
					b = appendString(b, 2, l.GetSku())
					b = appendString(b, 3, l.GetQuantity())
					b = appendString(b, 4, l.GetUnitPrice())
					b = appendString(b, 5, l.GetAmount())
					b = appendString(b, 6, l.GetUnitOfMeasure())
					b = appendString(b, 7, l.GetPartnerItemId())
					b = appendString(b, 8, l.GetGtin())
					b = appendString(b, 9, l.GetOrderLineNumber())
					return appendString(b, 10, l.GetDescription())
				})
			}
			if t := m.GetTerms(); t != nil {
				b = appendMessage(b, 6, t, func(b []byte) []byte {
					b = appendString(b, 1, t.GetDescription())
					b = appendInt32(b, 2, t.GetNetDays())
					b = appendString(b, 3, t.GetDiscountPercent())
					return appendInt32(b, 4, t.GetDiscountDays())
				})
			}
			for _, x := range m.GetTaxLines() {
				b = appendMessage(b, 7, x, func(b []byte) []byte {
					b = appendString(b, 1, x.GetType())
					b = appendString(b, 2, x.GetAmount())
					b = appendString(b, 3, x.GetRate())
					return appendString(b, 4, x.GetJurisdiction())
				})
			}
			b = appendString(b, 8, m.GetSubtotal())
			b = appendString(b, 9, m.GetTaxTotal())
			b = appendTimestamp(b, 10, m.GetInvoiceDate())
			b = appendTimestamp(b, 11, m.GetDueDate())
			b = appendString(b, 12, m.GetPartner())
			b = appendString(b, 13, m.GetPurchaseOrderNumber())
			b = appendParty(b, 14, m.GetBillTo())
			b = appendParty(b, 15, m.GetRemitTo())
			return appendParty(b, 16, m.GetShipTo())
		})
	case *eventv1.Event_SalesReturn:
		m := p.SalesReturn
		b = appendMessage(b, 17, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetReturnNumber())
			b = appendString(b, 2, m.GetOrderNumber())
			b = appendString(b, 3, m.GetStatus())
			b = appendShipmentLines(b, 4, m.GetLines())
			b = appendString(b, 5, m.GetReason())
			return appendString(b, 6, m.GetPartner())
		})
	case *eventv1.Event_OrderCancel:
		m := p.OrderCancel
		b = appendMessage(b, 50, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetOrderNumber())
			b = appendString(b, 2, m.GetPartner())
			b = appendString(b, 3, m.GetPurchaseOrderNumber())
			b = appendString(b, 4, m.GetStatus())
			b = appendString(b, 5, m.GetReason())
			return appendString(b, 6, m.GetErpOrderNumber())
		})
	case *eventv1.Event_OrderStatus:
		m := p.OrderStatus
		b = appendMessage(b, 51, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetOrderNumber())
			b = appendString(b, 2, m.GetPartner())
			b = appendString(b, 3, m.GetPurchaseOrderNumber())
			b = appendString(b, 4, m.GetStatus())
			b = appendString(b, 5, m.GetPreviousStatus())
			b = appendString(b, 6, m.GetErpOrderNumber())
			b = appendString(b, 7, m.GetMessage())
			b = appendUint64(b, 8, m.GetCauseSeq())
			return appendTimestamp(b, 9, m.GetChangedAt())
		})
	case *eventv1.Event_EdiInterchange:
		m := p.EdiInterchange
		b = appendMessage(b, 40, m, func(b []byte) []byte {
			b = appendString(b, 1, m.GetPartner())
			b = appendString(b, 2, m.GetDirection())
			b = appendString(b, 3, m.GetControl())
			b = appendString(b, 4, m.GetFile())
			b = appendString(b, 5, m.GetStatus())
			b = appendString(b, 6, m.GetReason())
			b = appendString(b, 7, m.GetAckControl())
			b = appendString(b, 8, m.GetTa1())
			b = appendTimestamp(b, 9, m.GetAt())
			for _, g := range m.GetGroups() {
				b = appendMessage(b, 10, g, func(b []byte) []byte {
					b = appendString(b, 1, g.GetFunctionalId())
					b = appendString(b, 2, g.GetControl())
					b = appendString(b, 3, g.GetVersion())
					b = appendString(b, 4, g.GetAck())
					b = appendString(b, 5, g.GetAckKind())
					b = appendTimestamp(b, 6, g.GetAckAt())
					b = appendTimestamp(b, 7, g.GetAckDue())
					for _, s := range g.GetSets() {
						b = appendMessage(b, 8, s, func(b []byte) []byte {
							b = appendString(b, 1, s.GetId())
							b = appendString(b, 2, s.GetControl())
							b = appendString(b, 3, s.GetPurchaseOrderNumber())
							b = appendString(b, 4, s.GetOrder())
							b = appendString(b, 5, s.GetStatus())
							return appendString(b, 6, s.GetEvent())
						})
					}
					return b
				})
			}
			return b
		})
	}
	return append(b, ev.ProtoReflect().GetUnknown()...)
}

func appendShipmentLines(b []byte, num protowire.Number, lines []*eventv1.ShipmentLine) []byte {
	for _, l := range lines {
		b = appendMessage(b, num, l, func(b []byte) []byte {
			b = appendString(b, 1, l.GetSku())
			b = appendString(b, 2, l.GetQuantity())
			b = appendString(b, 3, l.GetOrderLineNumber())
			b = appendString(b, 4, l.GetUnitOfMeasure())
			b = appendString(b, 5, l.GetPartnerItemId())
			b = appendString(b, 6, l.GetGtin())
			b = appendString(b, 7, l.GetOrderedQuantity())
			return appendString(b, 8, l.GetReason())
		})
	}
	return b
}

func appendParty(b []byte, num protowire.Number, p *eventv1.Party) []byte {
	if p == nil {
		return b
	}
	return appendMessage(b, num, p, func(b []byte) []byte {
		b = appendString(b, 1, p.GetName())
		for _, a := range p.GetAddressLines() {
			// Elements of a repeated string are written even when empty.
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendString(b, a)
		}
		b = appendString(b, 3, p.GetCity())
		b = appendString(b, 4, p.GetRegion())
		b = appendString(b, 5, p.GetPostalCode())
		b = appendString(b, 6, p.GetCountry())
		b = appendString(b, 7, p.GetGln())
		return appendString(b, 8, p.GetLocationCode())
	})
}

func appendInt32(b []byte, num protowire.Number, v int32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(int64(v)))
}

func appendUint64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendTimestamp(b []byte, num protowire.Number, t *timestamppb.Timestamp) []byte {
	if t == nil {
		return b
	}
	return appendMessage(b, num, t, func(b []byte) []byte {
		if t.Seconds != 0 {
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(t.Seconds))
		}
		if t.Nanos != 0 {
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(t.Nanos))
		}
		return b
	})
}

// appendMessage appends field num holding the message that body writes, followed by
// m's unknown fields. The length is written after the body, in the byte or two kept
// for it, moving the body when it needs more.
func appendMessage(b []byte, num protowire.Number, m proto.Message, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = append(b, 0) // room for a length below 128
	b = body(b)
	b = append(b, m.ProtoReflect().GetUnknown()...)
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	k := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, k-1)...)
	copy(b[at+k:], b[at+1:at+1+n])
	protowire.AppendVarint(b[at:at], uint64(n))
	return b
}

// AppendCommittedEvent appends the encoding of a crossdock.event.v1.CommittedEvent whose
// event is the encoded Event ev (its bytes as stored, appended unchanged) and whose
// committed_at is at (always written, as the ledger's chunks always carry one). A
// prune writes the newest pruned event per keys of a compact type this way, from the
// log chunk's bytes, instead of decoding the event and marshalling it again
// (controlplane/ledger, DESIGN.md "Retention"); proto.Unmarshal reads it back as that
// event (TestAppendCommittedEvent).
func AppendCommittedEvent(b []byte, seq uint64, ev []byte, at time.Time, agent string, agentSeq uint64) []byte {
	b = appendUint64(b, CommittedEventSeq, seq)
	b = protowire.AppendTag(b, CommittedEventEvent, protowire.BytesType)
	b = protowire.AppendBytes(b, ev)
	var ts [2 * (1 + 10)]byte // two fields of one tag byte and a varint each
	t := ts[:0]
	if s := at.Unix(); s != 0 {
		t = protowire.AppendTag(t, 1, protowire.VarintType)
		t = protowire.AppendVarint(t, uint64(s))
	}
	if n := at.Nanosecond(); n != 0 {
		t = protowire.AppendTag(t, 2, protowire.VarintType)
		t = protowire.AppendVarint(t, uint64(n))
	}
	b = protowire.AppendTag(b, CommittedEventCommittedAt, protowire.BytesType)
	b = protowire.AppendBytes(b, t)
	b = appendString(b, CommittedEventAgent, agent)
	return appendUint64(b, CommittedEventAgentSeq, agentSeq)
}
