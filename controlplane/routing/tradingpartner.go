package routing

import (
	"fmt"
	"strings"

	"github.com/crossdock/crossdock/internal/edi"
)

// KindTradingPartner is an EDI trading partner profile (see docs/edi.md): the spec is
// an edi.Profile, linked to a Partner document by spec.partner.
const KindTradingPartner Kind = "TradingPartner"

func validateTradingPartner(p *problems, s *edi.Profile) {
	for _, e := range s.Validate("spec") {
		p.add(e.Path, "%s", e.Msg)
	}
}

// checkTradingPartnerRefs reports TradingPartner documents that name a missing Partner,
// and two profiles with the same partner interchange id (an inbound file must find one).
func checkTradingPartnerRefs(docs []*Document) []*FieldError {
	partners := map[string]bool{}
	for _, d := range docs {
		if d.Kind == KindPartner {
			partners[d.Name()] = true
		}
	}
	var errs []*FieldError
	ids := map[string]string{}
	for _, d := range docs {
		if d.Kind != KindTradingPartner || d.TradingPartner == nil {
			continue
		}
		if !partners[d.TradingPartner.Partner] {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.partner", Msg: fmt.Sprintf("no partner %q (apply it, or fix the name)", d.TradingPartner.Partner)})
		}
		key := d.TradingPartner.SenderKey()
		if other, ok := ids[key]; ok {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.isaId", Msg: fmt.Sprintf("interchange id %s is already tradingpartners/%s's", key, other)})
		}
		ids[key] = d.Name()
	}
	return errs
}

func tradingPartnerSummary(s *edi.Profile) string {
	return fmt.Sprintf("partner=%s isa=%s version=%s usage=%s in=%s out=%s", s.Partner, s.SenderKey(), s.Version, s.Usage,
		strings.Join(s.Inbound, ","), strings.Join(s.Outbound, ","))
}
