package routing

import (
	"math/big"
	"os"
	"strings"
	"testing"
)

// TestAllocate: the documented examples of the allocation rule.
func TestAllocate(t *testing.T) {
	rule := &AllocationSpec{Percent: 80, SafetyStock: 5}
	for _, c := range []struct {
		rule      *AllocationSpec
		available string
		want      string
	}{
		{rule, "100", "80"}, {rule, "20", "15"}, {rule, "4", "0"}, {rule, "0", "0"}, {rule, "-3", "0"},
		{rule, "25", "20"}, {rule, "24", "19"}, {rule, "12.75", "7"}, {rule, "junk", "0"}, {rule, "1e9", "0"},
		{nil, "12.75", "12"}, {&AllocationSpec{Percent: 100}, "7", "7"}, {&AllocationSpec{Percent: 0, SafetyStock: 0}, "7", "0"},
	} {
		if got := Allocate(c.rule, c.available); got != c.want {
			t.Errorf("Allocate(%+v, %s) = %s, want %s", c.rule, c.available, got, c.want)
		}
	}
}

// FuzzAllocate: the offer is a whole number, never negative, never more than the
// percentage, and never leaves less than the safety stock unless it is 0.
func FuzzAllocate(f *testing.F) {
	f.Add("100", 80, 5)
	f.Add("0.5", 100, 0)
	f.Add("1e3", 50, 10)
	f.Fuzz(func(t *testing.T, available string, pct, safety int) {
		if pct < 0 || pct > 100 || safety < 0 || safety > 1<<20 || len(available) > 64 {
			return
		}
		got := Allocate(&AllocationSpec{Percent: pct, SafetyStock: safety}, available)
		o, ok := new(big.Int).SetString(got, 10)
		if !ok || o.Sign() < 0 {
			t.Fatalf("offer %q", got)
		}
		a, ok := new(big.Rat).SetString(strings.TrimSpace(available))
		if !ok || a.Sign() <= 0 || strings.ContainsAny(available, "eE/+_") || len(strings.TrimSpace(available)) > 64 {
			if got != "0" {
				t.Fatalf("offer %s of %q", got, available)
			}
			return
		}
		of := new(big.Rat).SetInt(o)
		if of.Cmp(new(big.Rat).Mul(a, big.NewRat(int64(pct), 100))) > 0 {
			t.Fatalf("offer %s over %d%% of %s", got, pct, available)
		}
		if o.Sign() > 0 && new(big.Rat).Sub(a, of).Cmp(new(big.Rat).SetInt64(int64(safety))) < 0 {
			t.Fatalf("offer %s of %s leaves less than the safety stock %d", got, available, safety)
		}
	})
}

// TestPartnerDocuments: Partner and Tier parse, validate field by field, and a
// partner's tier and destinations must exist.
func TestPartnerDocuments(t *testing.T) {
	docs, err := Parse([]byte(`apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: gold}
spec: {requestsPerSecond: 50, burst: 100, dailyQuota: 1000}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec:
  tier: gold
  scopes: [availability:read]
  skus: ["A-*"]
  limits: {burst: 7}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTable(docs, nil); err != nil {
		t.Fatalf("valid partner refused: %v", err)
	}
	l := EffectiveLimits(docs[0].Tier, docs[1].Partner.Limits)
	if l.RequestsPerSecond != 50 || l.Burst != 7 || l.DailyQuota != 1000 || l.MaxItemsPerCall != DefaultTier.MaxItemsPerCall {
		t.Fatalf("effective limits %+v", l)
	}
	if _, err := NewTable(docs[1:], nil); err == nil || !strings.Contains(err.Error(), `partners/acme: spec.tier: no tier "gold"`) {
		t.Fatalf("missing tier: %v", err)
	}
	_, err = Parse([]byte(`apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bad}
spec:
  tier: gold
  scopes: [availability:read, orders:delete]
  skus: []
  allocation: {percent: 120, safetyStock: -1}
`))
	for _, want := range []string{`spec.scopes[1]: unknown scope "orders:delete"`, "spec.skus: required", "spec.allocation.percent: 120 is outside 0 to 100", "spec.allocation.safetyStock: -1 is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// TestOperationsPartnerExample keeps the Tier and Partner example of docs/operations.md
// applicable.
func TestOperationsPartnerExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Partners, keys and quotas")
	_, block, ok2 := strings.Cut(sec, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/operations.md has no yaml example under ## Partners, keys and quotas")
	}
	docs, err := Parse([]byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTable(docs, nil); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[1].Partner == nil || EffectiveLimits(docs[0].Tier, docs[1].Partner.Limits).DailyQuota != 100000 {
		t.Fatalf("example parsed to %+v", docs)
	}
}
