package controlplane_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
)

// partnerCall makes one partner API call without a partner key: refused, and counted
// in crossdock_partner_requests_total{partner="-"}.
func partnerCall(t *testing.T, hc *http.Client, base string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+partnerv1connect.PartnerServiceGetAvailabilityProcedure, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("a partner call without a partner key answered %s", resp.Status)
	}
}
