package canonical

import (
	"crypto/sha256"
	"encoding/hex"
)

// OrderID is the Crossdock id of the order a partner placed under its purchase order
// number po: "ord_" and 20 hex digits of SHA-256 over partner and po. It is the same
// whichever door the order came in by (partner API, EDI 850), so a re-sent order finds
// the first one, and it says nothing about the partner or the number to whoever sees it.
func OrderID(partner, po string) string {
	h := sha256.New()
	h.Write([]byte(partner))
	h.Write([]byte{0})
	h.Write([]byte(po))
	return "ord_" + hex.EncodeToString(h.Sum(nil))[:20]
}

// OrderEventID is the event id of a partner's order: "order:<partner>:<po>". The ledger
// recognises a second submission by it (same content: a duplicate; other content: a
// conflict).
func OrderEventID(partner, po string) string {
	return "order:" + partner + ":" + po
}

// OrderAckEventID is the event id of the ERP's answer to order id (an OrderID).
func OrderAckEventID(orderID string) string {
	return "order.ack:" + orderID
}
