package alerts

import (
	"errors"
	"fmt"
	"time"

	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// env is what one evaluation measured, shared by every Alert.
type env struct {
	docs      *docs
	dests     []destState
	dead      map[string]int // unresolved (open or retrying) dead letters per destination
	agents    []*storev1.AgentRecord
	connected map[string]bool
	tiers     map[string]string // partner -> tier
	invLast   map[string]time.Time
}

type destState struct {
	delivery.DestinationStatus
	lag uint64
	age time.Duration
}

// measure reads the state every condition works from, once per evaluation.
func (e *Evaluator) measure(d *docs, now time.Time) (*env, error) {
	l := e.cfg.Store.Ledger()
	v := &env{docs: d, dead: map[string]int{}, connected: map[string]bool{}, tiers: map[string]string{}}
	for name, p := range d.partners {
		v.tiers[name] = p.Tier
	}
	need := map[string]bool{}
	var maxStale time.Duration
	for _, a := range d.alerts {
		need[a.Alert.Condition] = true
		if a.Alert.Condition == routing.ConditionInventoryStale {
			for _, t := range append([]string{""}, keys(a.Alert.Tiers)...) {
				maxStale = max(maxStale, a.Alert.EffectiveThreshold(t).StaleFor)
			}
		}
	}
	if need[routing.ConditionDestinationLag] || need[routing.ConditionErrorRate] || need[routing.ConditionDeadLetters] || need[routing.ConditionBreakerOpen] {
		sts, err := e.cfg.Delivery()
		if err != nil {
			return nil, fmt.Errorf("alerts: read delivery status: %w", err)
		}
		last := l.LastSeq()
		for _, st := range sts {
			ds := destState{DestinationStatus: st}
			if need[routing.ConditionDestinationLag] {
				next := max(st.Cursor.GetSeq(), 1) // a new destination starts at seq 1
				if next <= last {
					ds.lag = last - next + 1
					evs, _, err := l.ListEvents(ledger.Filter{}, next, 1)
					if err != nil {
						return nil, fmt.Errorf("alerts: read the event at %s's cursor: %w", st.Name, err)
					}
					if len(evs) > 0 && evs[0].GetCommittedAt() != nil {
						ds.age = max(now.Sub(evs[0].GetCommittedAt().AsTime()), 0)
					}
				}
			}
			v.dests = append(v.dests, ds)
		}
	}
	if need[routing.ConditionDeadLetters] {
		dls, err := l.DeadLetters(ledger.DeadLetterFilter{States: []storev1.DeadLetterState{storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN, storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING}})
		if err != nil {
			return nil, fmt.Errorf("alerts: read dead letters: %w", err)
		}
		for _, dl := range dls {
			v.dead[dl.GetDestination()]++
		}
	}
	if need[routing.ConditionAgentOffline] || need[routing.ConditionConnectorStalled] {
		recs, err := l.Agents()
		if err != nil {
			return nil, fmt.Errorf("alerts: read agents: %w", err)
		}
		v.agents = recs
		for _, a := range e.cfg.Connected() {
			v.connected[a] = true
		}
	}
	if need[routing.ConditionInventoryStale] {
		last, err := e.inv.update(l, d.partners, maxStale, now)
		if err != nil {
			return nil, err
		}
		v.invLast = last
	}
	return v, nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// observe measures one Alert's instances. Called with e.mu held.
func (e *Evaluator) observe(v *env, name string, s *routing.AlertSpec, now time.Time) []observation {
	var out []observation
	switch s.Condition {
	case routing.ConditionDestinationLag, routing.ConditionErrorRate, routing.ConditionDeadLetters, routing.ConditionBreakerOpen:
		for _, d := range v.dests {
			partner := v.docs.partnerOf[d.Name]
			if !routing.Selects(s.Destinations, d.Name) || (len(s.Partners) > 0 && (partner == "" || !routing.Selects(s.Partners, partner))) {
				continue
			}
			labels := map[string]string{"destination": d.Name}
			tier := ""
			if partner != "" {
				tier = v.tiers[partner]
				labels["partner"], labels["tier"] = partner, tier
			}
			t := s.EffectiveThreshold(tier)
			o := observation{key: "destination=" + d.Name, labels: labels, known: true}
			switch s.Condition {
			case routing.ConditionDestinationLag:
				o.bad = (t.LagEvents > 0 && d.lag >= uint64(t.LagEvents)) || (t.LagAge > 0 && d.age >= t.LagAge)
				o.value = fmt.Sprintf("lag %d events, oldest %s", d.lag, d.age.Round(time.Second))
			case routing.ConditionErrorRate:
				w := s.WindowDuration()
				total, failed := e.attempts.rate(d.Name, w, now)
				ratio := 0.0
				if total > 0 {
					ratio = float64(failed) / float64(total)
				}
				switch {
				case total >= uint64(t.MinAttempts):
					o.bad = ratio >= t.ErrorRatio
				case now.Sub(e.attempts.since()) < w:
					o.known = false // too few attempts measured yet in this leadership
				}
				o.value = fmt.Sprintf("%d of %d attempts failed in %s (%.1f%%)", failed, total, w, 100*ratio)
			case routing.ConditionDeadLetters:
				n := v.dead[d.Name]
				o.bad = n >= t.DeadLetters
				o.value = fmt.Sprintf("%d unresolved dead letters", n)
			case routing.ConditionBreakerOpen:
				o.known = d.Active
				o.bad = d.Breaker == delivery.BreakerOpen
				o.value = "breaker " + d.Breaker
			}
			out = append(out, o)
		}
	case routing.ConditionAgentOffline:
		t := s.EffectiveThreshold("")
		for _, a := range v.agents {
			id := a.GetId()
			if a.GetRevoked() || !routing.Selects(s.Agents, id) {
				continue
			}
			o := observation{key: "agent=" + id, labels: map[string]string{"agent": id}, known: true}
			if v.connected[id] {
				delete(e.offline, id)
				o.value = "connected"
			} else {
				since, ok := e.offline[id]
				if !ok {
					since = now
					e.offline[id] = now
				}
				gone := now.Sub(since)
				o.bad = gone >= t.OfflineFor
				// Not long enough yet: neither fire nor resolve (a new leader has not seen
				// the agent since it took over).
				o.known = o.bad
				o.value = fmt.Sprintf("no stream for %s (seen by this leader)", gone.Round(time.Second))
			}
			out = append(out, o)
		}
	case routing.ConditionConnectorStalled:
		t := s.EffectiveThreshold("")
		for _, a := range v.agents {
			id := a.GetId()
			if a.GetRevoked() || !routing.Selects(s.Agents, id) || !v.connected[id] {
				continue
			}
			rep, ok := e.cfg.Connectors(id)
			if !ok {
				continue
			}
			for _, c := range rep.Connectors {
				if !routing.Selects(s.Connectors, c.GetName()) {
					continue
				}
				o := observation{key: "agent=" + id + ",connector=" + c.GetName(), labels: map[string]string{"agent": id, "connector": c.GetName()}, known: true}
				switch c.GetState() {
				case "stalled", "restarting", "failed":
					stuck := time.Duration(0)
					if c.GetStateSince() != nil {
						stuck = max(now.Sub(c.GetStateSince().AsTime()), 0)
					}
					o.bad = stuck >= t.StalledFor
					o.known = o.bad
					o.value = fmt.Sprintf("%s for %s: %s", c.GetState(), stuck.Round(time.Second), c.GetLastError())
				default:
					o.value = c.GetState()
				}
				out = append(out, o)
			}
		}
	case routing.ConditionInventoryStale:
		for _, p := range keys(v.docs.partners) {
			if !routing.Selects(s.Partners, p) {
				continue
			}
			tier := v.tiers[p]
			t := s.EffectiveThreshold(tier)
			last := v.invLast[p]
			stale := max(now.Sub(last), 0)
			o := observation{key: "partner=" + p, labels: map[string]string{"partner": p, "tier": tier}, known: true, bad: stale >= t.StaleFor}
			o.value = fmt.Sprintf("no inventory update the partner sees for %s", stale.Round(time.Second))
			out = append(out, o)
		}
	case routing.ConditionEDIAckOverdue:
		if e.cfg.EDI == nil {
			return nil // not wired in this build: never fires
		}
		for _, p := range keys(v.docs.partners) {
			if !routing.Selects(s.Partners, p) {
				continue
			}
			tier := v.tiers[p]
			n := e.cfg.EDI.OverdueAcks(p)
			out = append(out, observation{key: "partner=" + p, labels: map[string]string{"partner": p, "tier": tier}, known: true,
				bad: n >= s.EffectiveThreshold(tier).OverdueAcks, value: fmt.Sprintf("%d acknowledgements overdue", n)})
		}
	}
	return out
}

// inventoryTracker keeps, per partner, the commit time of the newest inventory.level
// event the partner sees (its SKU globs and locations), reading the ledger forward from
// where it stopped. Its first read starts at the longest staleFor ago, so it reads a
// bounded part of the ledger whatever its size.
type inventoryTracker struct {
	next  uint64
	start time.Time
	last  map[string]time.Time
}

// maxInventoryRead bounds the events one evaluation reads (the rest at the next).
const maxInventoryRead = 50000

func (t *inventoryTracker) update(l *ledger.Ledger, partners map[string]*routing.PartnerSpec, span time.Duration, now time.Time) (map[string]time.Time, error) {
	if t.last == nil {
		t.last = map[string]time.Time{}
		t.start = now.Add(-span)
		seq, err := l.SeqAtTime(t.start)
		if err != nil {
			return nil, fmt.Errorf("alerts: find the first event of the last %s: %w", span, err)
		}
		t.next = max(seq, 1)
		// Inventory cannot be older than the ledger: a partner that never had any
		// counts from the first event held (from now in an empty ledger).
		first, _, err := l.ListEvents(ledger.Filter{}, 0, 1)
		if err != nil {
			return nil, fmt.Errorf("alerts: read the first event held: %w", err)
		}
		floor := now
		if len(first) > 0 {
			floor = first[0].GetCommittedAt().AsTime()
		}
		if floor.After(t.start) {
			t.start = floor
		}
	}
	f := ledger.Filter{Type: "inventory.level"}
	for read := 0; read < maxInventoryRead; {
		evs, next, err := l.ListEvents(f, t.next, 1000)
		if errors.Is(err, ledger.ErrPruned) {
			evs, next, err = l.ListEvents(f, 0, 1000) // from the earliest held
		}
		if err != nil {
			return nil, fmt.Errorf("alerts: read inventory events: %w", err)
		}
		for _, ev := range evs {
			lv := ev.GetEvent().GetInventoryLevel()
			at := ev.GetCommittedAt().AsTime()
			for name, p := range partners {
				if p.SeesSKU(lv.GetSku()) && p.SeesLocation(lv.GetLocation()) && at.After(t.last[name]) {
					t.last[name] = at
				}
			}
		}
		read += len(evs)
		if len(evs) > 0 {
			t.next = evs[len(evs)-1].GetSeq() + 1
		}
		if next == 0 || len(evs) == 0 {
			break
		}
	}
	out := make(map[string]time.Time, len(partners))
	for name := range partners {
		out[name] = t.last[name]
		if out[name].IsZero() {
			out[name] = t.start // nothing since the tracker's start
		}
	}
	return out, nil
}
