package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/demo/sampleerp"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

// demoOrderDocs send partners' orders (events of type order with a partner; the ERP's
// own sales orders have none) to the sample ERP's sql connector, which stages them and
// answers with its import number (order.ack).
const demoOrderDocs = `apiVersion: crossdock.io/v1
kind: Destination
metadata:
  name: sample-erp-orders
spec:
  type: agent
  agent: demo-agent
  connector: sample-erp
---
apiVersion: crossdock.io/v1
kind: Route
metadata:
  name: partner-orders-to-erp
spec:
  match:
    types: [order]
  filter: event.order.partner != ""
  destinations: [sample-erp-orders]
`

// demoOrderPO is the purchase order number of the order the banner's curl places.
const demoOrderPO = "PO-DEMO-1"

// demoOrders routes partners' orders to the sample ERP, prints the curls with which
// demo-market places an order through the partner API (SubmitOrder) and reads its status
// (GetOrder), and follows the partners' orders: each order.ack (accepted with the ERP's
// import number, or rejected with its reason) and shipment is printed as it is
// committed.
func demoOrders(ctx context.Context, w io.Writer, l *ledger.Ledger, addr, ca string) error {
	routes, err := routingClient()
	if err != nil {
		return err
	}
	if _, err := routes.ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: demoOrderDocs})); err != nil {
		return fmt.Errorf("apply the demo's order route: %w", err)
	}
	fmt.Fprintf(w, `
Orders (route partner-orders-to-erp: demo-market's orders into the sample ERP's staging
tables; the ERP answers with an order.ack, the simulator ships staged orders after %s):
  curl --cacert %s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    https://%s/crossdock.partner.v1.PartnerService/SubmitOrder \
    -d '{"purchaseOrderNumber":"%s","currency":"USD","lines":[{"sku":"%s","quantity":"3","unitPrice":"12.50"}]}'
  curl --cacert %s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    https://%s/crossdock.partner.v1.PartnerService/GetOrder -d '{"purchaseOrderNumber":"%s"}'
  %s orders describe %s     # the order's steps, with times and seqs
`, sampleerp.ShipAfter, ca, addr, demoOrderPO, demoSKU, ca, addr, demoOrderPO, selfCommand(), canonical.OrderID("demo-market", demoOrderPO))
	go followOrders(ctx, w, l)
	return nil
}

// followOrders prints partners' order answers and shipments as they are committed.
func followOrders(ctx context.Context, w io.Writer, l *ledger.Ledger) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	next := map[string]uint64{"order.ack": 1, "shipment": 1}
	partnerOrders := map[string]bool{} // Crossdock ids of the acknowledged orders
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, typ := range []string{"order.ack", "shipment"} {
			evs, n, err := l.ListEvents(ledger.Filter{Type: typ}, next[typ], 1000)
			if err != nil {
				continue
			}
			if n > next[typ] {
				next[typ] = n
			}
			for _, ce := range evs {
				if ce.GetSeq() >= next[typ] {
					next[typ] = ce.GetSeq() + 1
				}
				at := ce.GetCommittedAt().AsTime().Local().Format(time.TimeOnly)
				switch ev := ce.GetEvent(); typ {
				case "order.ack":
					a := ev.GetOrderAck()
					partnerOrders[a.GetOrderNumber()] = true
					if a.GetStatus() == "accepted" {
						fmt.Fprintf(w, "%s  order %s (%s %s): accepted by the ERP as %s (seq %d)\n", at, a.GetOrderNumber(), a.GetPartner(), a.GetPurchaseOrderNumber(), a.GetErpOrderNumber(), ce.GetSeq())
					} else {
						fmt.Fprintf(w, "%s  order %s (%s %s): %s by the ERP: %s (seq %d)\n", at, a.GetOrderNumber(), a.GetPartner(), a.GetPurchaseOrderNumber(), a.GetStatus(), a.GetMessage(), ce.GetSeq())
					}
				case "shipment":
					s := ev.GetShipment()
					if partnerOrders[s.GetOrderNumber()] {
						fmt.Fprintf(w, "%s  order %s: shipped, %s %s tracking %s (seq %d)\n", at, s.GetOrderNumber(), s.GetShipmentNumber(), s.GetCarrierScac(), s.GetTrackingNumber(), ce.GetSeq())
					}
				}
			}
		}
	}
}
