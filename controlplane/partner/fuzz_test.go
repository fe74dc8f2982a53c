package partner

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/controlplane/routing"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
)

// FuzzParsePartnerKey: the gate's header parsing never panics, and what it accepts is a
// key that prints back to itself.
func FuzzParsePartnerKey(f *testing.F) {
	_, _, full, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"Bearer " + full, "bearer " + full, "Bearer  " + full + " ", "Basic abc", "Bearer cdk_", "Bearer cdk_0123456789abcdef_", "", "Bearer "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		id, secret, reason, err := ParseAuthorization(header)
		if err != nil {
			if reason != ReasonNoKey && reason != ReasonBadKey {
				t.Fatalf("refusal without a reason: %q", reason)
			}
			return
		}
		key := KeyPrefix + id + "_" + secret
		if !strings.Contains(header, key) {
			t.Fatalf("accepted %q as %q", header, key)
		}
		if id2, secret2, err := ParseKey(key); err != nil || id2 != id || secret2 != secret {
			t.Fatalf("%q does not parse back: %v", key, err)
		}
		if !SecretMatches(HashSecret(secret), secret) || SecretMatches(HashSecret(secret+"x"), secret) {
			t.Fatal("hash comparison is wrong")
		}
	})
}

// FuzzDecodePartnerRequests decodes request bodies the way Connect's JSON codec does
// and validates them: never a panic, and a request that passes validation is within the
// limits, while every violation names a field.
func FuzzDecodePartnerRequests(f *testing.F) {
	for _, s := range []string{
		`{"skus":["A-1","A-2"]}`, `{"skus":["A-1"],"locations":["WH-1"],"minSeq":"12"}`, `{"skus":[]}`, `{"skus":[""]}`,
		`{"pageSize":5,"pageToken":"A-1"}`, `{"pageSize":-1}`, `{"skus":null}`, `{}`, `[]`, `{"skus":["` + strings.Repeat("x", 200) + `"]}`,
		`{"unknown":1,"skus":["A"]}`, `{"min_seq":"18446744073709551615","skus":["A"]}`,
	} {
		f.Add([]byte(s))
	}
	p := &Partner{Name: "p", Spec: &routing.PartnerSpec{SKUs: []string{"*"}, Locations: []string{"WH-1"}},
		Limits: routing.EffectiveLimits(&routing.TierSpec{MaxItemsPerCall: 10}, nil)}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true} // Connect's JSON codec
	f.Fuzz(func(t *testing.T, body []byte) {
		var a partnerv1.GetAvailabilityRequest
		if opts.Unmarshal(body, &a) == nil {
			v := validateAvailability(&a, p)
			checkViolations(t, v)
			if len(v) == 0 && (len(a.GetSkus()) < 1 || len(a.GetSkus()) > 10) {
				t.Fatalf("accepted %d skus", len(a.GetSkus()))
			}
			for _, l := range a.GetLocations() {
				if len(v) == 0 && l != "WH-1" {
					t.Fatalf("accepted location %q", l)
				}
			}
		}
		var pr partnerv1.GetPricesRequest
		if opts.Unmarshal(body, &pr) == nil {
			checkViolations(t, validatePrices(&pr, p))
		}
		var li partnerv1.ListItemsRequest
		if opts.Unmarshal(body, &li) == nil {
			v, size := validateListItems(&li, p)
			checkViolations(t, v)
			if len(v) == 0 && (size < 1 || size > 10) {
				t.Fatalf("accepted page size %d", size)
			}
		}
	})
}

func checkViolations(t *testing.T, v violations) {
	t.Helper()
	for _, fv := range v {
		if fv.GetField() == "" || fv.GetDescription() == "" {
			t.Fatalf("violation without a field or description: %v", fv)
		}
	}
	if err := v.err(); (err == nil) != (len(v) == 0) || (err != nil && connect.CodeOf(err) != connect.CodeInvalidArgument) {
		t.Fatalf("violations %v gave %v", v, err)
	}
}
