package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/internal/cliconfig"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

// demoPartnerDocs is the demo's partner: it sees the first thousand SKUs in two
// warehouses, offered at 80% of available and never below a safety stock of 5.
const demoPartnerDocs = `apiVersion: crossdock.io/v1
kind: Tier
metadata:
  name: demo
spec:
  requestsPerSecond: 50
  burst: 100
  dailyQuota: 100000
  maxBodyBytes: 65536
  maxItemsPerCall: 100
---
apiVersion: crossdock.io/v1
kind: Partner
metadata:
  name: demo-market
spec:
  displayName: Demo Market
  tier: demo
  scopes: [availability:read, prices:read, orders:write, orders:read]
  locations: [WH-EAST, WH-WEST]
  skus: ["SKU-00*"]
  allocation:
    percent: 80
    safetyStock: 5
`

// demoPartner applies the demo partner, creates its key, writes the cluster CA next to
// the demo's data and prints the curl that asks its availability.
func demoPartner(ctx context.Context, w io.Writer, dir, addr, adminConfig string) error {
	routes, err := routingClient()
	if err != nil {
		return err
	}
	if _, err := routes.ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: demoPartnerDocs})); err != nil {
		return fmt.Errorf("apply the demo partner: %w", err)
	}
	pa, err := partnerAdminClient()
	if err != nil {
		return err
	}
	key, err := pa.CreateKey(ctx, connect.NewRequest(&partnerv1.CreateKeyRequest{Partner: "demo-market"}))
	if err != nil {
		return fmt.Errorf("create the demo partner's key: %w", err)
	}
	cfg, err := cliconfig.Load(adminConfig)
	if err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte(cfg.CAPEM), 0o644); err != nil {
		return fmt.Errorf("write the cluster CA for curl: %w", err)
	}
	fmt.Fprintf(w, `
Partner API (partner demo-market: SKU-00*, WH-EAST and WH-WEST, 80%% of available, safety stock 5):
  export KEY=%s
  curl --cacert %s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    https://%s/crossdock.partner.v1.PartnerService/GetAvailability \
    -d '{"skus":["SKU-00001","SKU-00002","SKU-00042"]}'
`, key.Msg.GetKey(), ca, addr)
	return nil
}
