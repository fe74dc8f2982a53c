package routing

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// Partner and Tier documents describe who may call the partner API and how much.
const (
	KindPartner Kind = "Partner"
	KindTier    Kind = "Tier"
)

// Partner API scopes.
const (
	ScopeAvailabilityRead = "availability:read"
	ScopePricesRead       = "prices:read"
	ScopeOrdersWrite      = "orders:write"
	ScopeOrdersRead       = "orders:read"
	ScopeEventsRead       = "events:read"
)

// Scopes lists every scope a Partner document may grant.
var Scopes = []string{ScopeAvailabilityRead, ScopePricesRead, ScopeOrdersWrite, ScopeOrdersRead, ScopeEventsRead}

// PartnerSpec is the spec of a Partner: who it is, what it may call and see.
type PartnerSpec struct {
	DisplayName string `json:"displayName,omitempty"`
	// Tier names a Tier document: the partner's limits.
	Tier string `json:"tier"`
	// Scopes the partner's keys carry (Scopes lists them).
	Scopes []string `json:"scopes"`
	// Locations the partner sees; empty means every location.
	Locations []string `json:"locations,omitempty"`
	// SKUs are globs (* any run, ? one character) of the SKUs the partner sees.
	SKUs []string `json:"skus"`
	// PriceList is the price list GetPrices answers from.
	PriceList string `json:"priceList,omitempty"`
	// Allocation is the share of available stock offered to the partner.
	Allocation *AllocationSpec `json:"allocation,omitempty"`
	// Destinations names the Destination documents (webhook or stream) that feed it.
	Destinations []string `json:"destinations,omitempty"`
	// Limits overrides fields of the tier for this partner.
	Limits *TierSpec `json:"limits,omitempty"`
	// Orders tunes SubmitOrder for the partner.
	Orders *PartnerOrdersSpec `json:"orders,omitempty"`
}

// PartnerOrdersSpec tunes the partner's order submission.
type PartnerOrdersSpec struct {
	// CheckAvailability refuses an order line whose quantity is more than the partner
	// is offered (GetAvailability) at the order's location, or summed over its locations.
	CheckAvailability bool `json:"checkAvailability,omitempty"`
}

// AllocationSpec is a channel allocation rule; see Allocate.
type AllocationSpec struct {
	Percent     int `json:"percent"`
	SafetyStock int `json:"safetyStock,omitempty"`
}

// TierSpec is the spec of a Tier (and a Partner's limits override): zero fields take
// DefaultTier's.
type TierSpec struct {
	RequestsPerSecond float64 `json:"requestsPerSecond,omitempty"`
	Burst             int     `json:"burst,omitempty"`
	DailyQuota        int     `json:"dailyQuota,omitempty"`
	MaxBodyBytes      int     `json:"maxBodyBytes,omitempty"`
	MaxItemsPerCall   int     `json:"maxItemsPerCall,omitempty"`
}

// DefaultTier fills the fields a Tier leaves zero.
var DefaultTier = TierSpec{RequestsPerSecond: 10, Burst: 20, DailyQuota: 10000, MaxBodyBytes: 64 << 10, MaxItemsPerCall: 100}

// Limits of the tier fields.
const (
	MaxRequestsPerSecond = 100000
	MaxDailyQuota        = 1 << 30
	MaxPartnerBodyBytes  = 4 << 20
	MaxItemsPerCall      = 1000
)

// Effective returns the limits in force: the partner's overrides over the tier over
// DefaultTier.
func EffectiveLimits(tier, override *TierSpec) TierSpec {
	out := DefaultTier
	for _, s := range []*TierSpec{tier, override} {
		if s == nil {
			continue
		}
		if s.RequestsPerSecond > 0 {
			out.RequestsPerSecond = s.RequestsPerSecond
		}
		if s.Burst > 0 {
			out.Burst = s.Burst
		}
		if s.DailyQuota > 0 {
			out.DailyQuota = s.DailyQuota
		}
		if s.MaxBodyBytes > 0 {
			out.MaxBodyBytes = s.MaxBodyBytes
		}
		if s.MaxItemsPerCall > 0 {
			out.MaxItemsPerCall = s.MaxItemsPerCall
		}
	}
	return out
}

// SeesSKU reports whether one of the partner's SKU globs matches sku.
func (s *PartnerSpec) SeesSKU(sku string) bool {
	for _, g := range s.SKUs {
		if globMatch(g, sku) {
			return true
		}
	}
	return false
}

// SeesLocation reports whether the partner sees location (all when Locations is empty).
func (s *PartnerSpec) SeesLocation(loc string) bool {
	return len(s.Locations) == 0 || slices.Contains(s.Locations, loc)
}

// HasScope reports whether the partner holds scope.
func (s *PartnerSpec) HasScope(scope string) bool { return slices.Contains(s.Scopes, scope) }

// Allocate applies the allocation rule to an available quantity (a decimal string) and
// returns the quantity offered, a whole number as a decimal string:
//
//	offered = floor(available × percent / 100)
//	if available − offered < safetyStock: offered = max(0, available − safetyStock), floored
//
// so the partner is never offered stock that would leave less than the safety stock
// unoffered. With percent 80 and safety stock 5: available 100 → 80; 20 → 15; 4 → 0;
// 0 or negative → 0. A nil rule offers floor(available) (and 0 when negative). An
// available that is not a plain decimal number (digits, one point, a leading minus; at
// most 64 characters) is offered as 0.
func Allocate(rule *AllocationSpec, available string) string {
	available = strings.TrimSpace(available)
	if len(available) > 64 || strings.ContainsAny(available, "eE/+_") {
		return "0" // big.Rat would accept 1e999999999 and spend forever on it
	}
	pct, safety := int64(100), int64(0)
	if rule != nil {
		pct, safety = int64(rule.Percent), int64(rule.SafetyStock)
	}
	if n, err := strconv.ParseInt(available, 10, 64); err == nil && n < 1<<40 {
		// Whole quantities (the common case) without big numbers: n*pct cannot overflow.
		if n <= 0 {
			return "0"
		}
		offered := n * pct / 100
		if n-offered < safety {
			offered = max(0, n-safety)
		}
		return strconv.FormatInt(offered, 10)
	}
	a, ok := new(big.Rat).SetString(available)
	if !ok || a.Sign() <= 0 {
		return "0"
	}
	offered := floorRat(new(big.Rat).Mul(a, big.NewRat(pct, 100)))
	rest := new(big.Rat).Sub(a, new(big.Rat).SetInt(offered))
	if rest.Cmp(new(big.Rat).SetInt64(safety)) < 0 {
		offered = floorRat(new(big.Rat).Sub(a, new(big.Rat).SetInt64(safety)))
	}
	if offered.Sign() < 0 {
		return "0"
	}
	return offered.String()
}

func floorRat(r *big.Rat) *big.Int {
	q, _ := new(big.Int).DivMod(r.Num(), r.Denom(), new(big.Int)) // Euclidean: floor for a positive denominator
	return q
}

func validatePartner(p *problems, s *PartnerSpec) {
	if s.Tier == "" {
		p.add("spec.tier", "required: the name of a Tier document")
	}
	if len(s.Scopes) == 0 {
		p.add("spec.scopes", "required: at least one of %s", strings.Join(Scopes, ", "))
	}
	seen := map[string]bool{}
	for i, sc := range s.Scopes {
		if !slices.Contains(Scopes, sc) {
			p.add(fmt.Sprintf("spec.scopes[%d]", i), "unknown scope %q (known: %s)", sc, strings.Join(Scopes, ", "))
		}
		if seen[sc] {
			p.add(fmt.Sprintf("spec.scopes[%d]", i), "%q appears twice", sc)
		}
		seen[sc] = true
	}
	if len(s.SKUs) == 0 {
		p.add("spec.skus", "required: SKU globs the partner sees (\"*\" for every SKU)")
	}
	for i, g := range s.SKUs {
		if g == "" || len(g) > 128 {
			p.add(fmt.Sprintf("spec.skus[%d]", i), "must be 1 to 128 characters")
		}
	}
	for i, l := range s.Locations {
		if l == "" || len(l) > 128 {
			p.add(fmt.Sprintf("spec.locations[%d]", i), "must be 1 to 128 characters")
		}
	}
	if a := s.Allocation; a != nil {
		if a.Percent < 0 || a.Percent > 100 {
			p.add("spec.allocation.percent", "%d is outside 0 to 100", a.Percent)
		}
		if a.SafetyStock < 0 {
			p.add("spec.allocation.safetyStock", "%d is negative", a.SafetyStock)
		}
	}
	if s.Limits != nil {
		validateTier(p, "spec.limits", s.Limits)
	}
}

func validateTier(p *problems, path string, s *TierSpec) {
	if s.RequestsPerSecond < 0 || s.RequestsPerSecond > MaxRequestsPerSecond {
		p.add(path+".requestsPerSecond", "%g is outside 0 to %d", s.RequestsPerSecond, MaxRequestsPerSecond)
	}
	if s.Burst < 0 || s.Burst > MaxRequestsPerSecond {
		p.add(path+".burst", "%d is outside 0 to %d", s.Burst, MaxRequestsPerSecond)
	}
	if s.DailyQuota < 0 || s.DailyQuota > MaxDailyQuota {
		p.add(path+".dailyQuota", "%d is outside 0 to %d", s.DailyQuota, MaxDailyQuota)
	}
	if s.MaxBodyBytes < 0 || s.MaxBodyBytes > MaxPartnerBodyBytes {
		p.add(path+".maxBodyBytes", "%d is outside 0 to %d", s.MaxBodyBytes, MaxPartnerBodyBytes)
	}
	if s.MaxItemsPerCall < 0 || s.MaxItemsPerCall > MaxItemsPerCall {
		p.add(path+".maxItemsPerCall", "%d is outside 0 to %d", s.MaxItemsPerCall, MaxItemsPerCall)
	}
}

// checkPartnerRefs reports Partner documents that name a missing Tier or Destination.
func checkPartnerRefs(docs []*Document) []*FieldError {
	tiers, dests := map[string]bool{}, map[string]bool{}
	for _, d := range docs {
		switch d.Kind {
		case KindTier:
			tiers[d.Name()] = true
		case KindDestination:
			dests[d.Name()] = true
		}
	}
	var errs []*FieldError
	for _, d := range docs {
		if d.Kind != KindPartner || d.Partner == nil {
			continue
		}
		if !tiers[d.Partner.Tier] {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.tier", Msg: fmt.Sprintf("no tier %q (apply it, or fix the name)", d.Partner.Tier)})
		}
		for i, dn := range d.Partner.Destinations {
			if !dests[dn] {
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: fmt.Sprintf("spec.destinations[%d]", i), Msg: fmt.Sprintf("no destination %q (apply it, or fix the name)", dn)})
			}
		}
	}
	return errs
}

func partnerSummary(d *Document) string {
	switch d.Kind {
	case KindPartner:
		s := d.Partner
		return fmt.Sprintf("tier=%s scopes=%s skus=%s", s.Tier, strings.Join(s.Scopes, ","), strings.Join(s.SKUs, ","))
	case KindTier:
		l := EffectiveLimits(d.Tier, nil)
		return fmt.Sprintf("rate=%g/s burst=%d daily=%d body=%dB items=%d", l.RequestsPerSecond, l.Burst, l.DailyQuota, l.MaxBodyBytes, l.MaxItemsPerCall)
	}
	return ""
}
