package partner

import (
	"fmt"
	"sync"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
)

// Partner is a Partner document with its effective limits.
type Partner struct {
	Name   string
	Spec   *routing.PartnerSpec
	Limits routing.TierSpec
}

// Directory holds the Partner and Tier documents of this node's replica, parsed once
// per documents revision.
type Directory struct {
	Ledger *ledger.Ledger

	mu       sync.Mutex
	rev      uint64
	loaded   bool
	partners map[string]*Partner
}

// Get returns a partner by name; ok is false when no such Partner document is live.
func (d *Directory) Get(name string) (*Partner, bool, error) {
	m, err := d.all()
	if err != nil {
		return nil, false, err
	}
	p, ok := m[name]
	return p, ok, nil
}

// All returns every partner by name.
func (d *Directory) All() (map[string]*Partner, error) { return d.all() }

func (d *Directory) all() (map[string]*Partner, error) {
	rev, err := d.Ledger.DocumentsRevision()
	if err != nil {
		return nil, fmt.Errorf("partner: read documents revision: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.loaded && rev == d.rev {
		return d.partners, nil
	}
	tiers := map[string]*routing.TierSpec{}
	trecs, err := d.Ledger.Documents(string(routing.KindTier))
	if err != nil {
		return nil, fmt.Errorf("partner: read tiers: %w", err)
	}
	for _, rec := range trecs {
		doc, err := routing.FromRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("partner: %w", err)
		}
		tiers[doc.Name()] = doc.Tier
	}
	precs, err := d.Ledger.Documents(string(routing.KindPartner))
	if err != nil {
		return nil, fmt.Errorf("partner: read partners: %w", err)
	}
	m := make(map[string]*Partner, len(precs))
	for _, rec := range precs {
		doc, err := routing.FromRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("partner: %w", err)
		}
		m[doc.Name()] = &Partner{Name: doc.Name(), Spec: doc.Partner, Limits: routing.EffectiveLimits(tiers[doc.Partner.Tier], doc.Partner.Limits)}
	}
	d.partners, d.rev, d.loaded = m, rev, true
	return m, nil
}
