package routing

import (
	"fmt"
	"strings"
)

// diffContext is how many unchanged lines surround each change in a Diff.
const diffContext = 2

// maxDiffCells bounds the LCS table; larger inputs get a whole-file diff.
const maxDiffCells = 4_000_000

// Diff is a line diff from old to new: changed lines prefixed "- " and "+ ", with up to
// two unchanged lines ("  ") around each change and "..." between distant changes. It
// is "" when old and new are equal. Pass masked documents: Diff does not hide secrets.
func Diff(old, new string) string {
	if old == new {
		return ""
	}
	a, b := splitLines(old), splitLines(new)
	type op struct {
		kind byte // ' ', '-', '+'
		line string
	}
	var ops []op
	if (len(a)+1)*(len(b)+1) > maxDiffCells {
		for _, l := range a {
			ops = append(ops, op{'-', l})
		}
		for _, l := range b {
			ops = append(ops, op{'+', l})
		}
	} else {
		// lcs[i][j] is the LCS length of a[i:] and b[j:].
		lcs := make([][]int32, len(a)+1)
		for i := range lcs {
			lcs[i] = make([]int32, len(b)+1)
		}
		for i := len(a) - 1; i >= 0; i-- {
			for j := len(b) - 1; j >= 0; j-- {
				if a[i] == b[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < len(a) || j < len(b) {
			switch {
			case i < len(a) && j < len(b) && a[i] == b[j]:
				ops = append(ops, op{' ', a[i]})
				i++
				j++
			case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
				ops = append(ops, op{'-', a[i]})
				i++
			default:
				ops = append(ops, op{'+', b[j]})
				j++
			}
		}
	}
	// Keep changes and the context around them.
	keep := make([]bool, len(ops))
	for k, o := range ops {
		if o.kind != ' ' {
			for c := max(0, k-diffContext); c <= min(len(ops)-1, k+diffContext); c++ {
				keep[c] = true
			}
		}
	}
	var sb strings.Builder
	gap := false
	for k, o := range ops {
		if !keep[k] {
			gap = true
			continue
		}
		if gap && sb.Len() > 0 {
			sb.WriteString("  ...\n")
		}
		gap = false
		fmt.Fprintf(&sb, "%c %s\n", o.kind, o.line)
	}
	return sb.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// Summary is a one-line description of a document for listings.
func Summary(d *Document) string {
	switch d.Kind {
	case KindRoute:
		s := d.Route
		var parts []string
		if len(s.Match.Types) > 0 {
			parts = append(parts, "types="+strings.Join(s.Match.Types, ","))
		} else {
			parts = append(parts, "types=*")
		}
		for _, k := range sortedKeys(s.Match.Keys) {
			parts = append(parts, k+"="+s.Match.Keys[k])
		}
		if s.Filter != "" {
			parts = append(parts, "filter")
		}
		if s.Mapping != "" {
			parts = append(parts, "mapping")
		}
		dests := s.Destinations
		if s.Destination != "" {
			dests = []string{s.Destination}
		}
		return strings.Join(parts, " ") + " -> " + strings.Join(dests, ",")
	case KindDestination:
		s := d.Destination
		var target string
		switch s.Type {
		case DestinationWebhook:
			target = "webhook " + s.URL
			if s.AcceptsBatches {
				target += " (batches)"
			}
		case DestinationStream:
			target = "stream partner=" + s.Partner
		case DestinationAgent:
			target = "agent " + s.Agent + " connector=" + s.Connector
		}
		if s.Policy != "" {
			target += " policy=" + s.Policy
		}
		return target
	case KindRetention:
		return retentionSummary(d.Retention)
	case KindPolicy:
		p := EffectivePolicy(d.Name(), d.Policy)
		var parts []string
		if p.RatePerSecond > 0 {
			parts = append(parts, fmt.Sprintf("rate=%g/s burst=%d", p.RatePerSecond, p.Burst))
		}
		if p.Coalesce {
			by := "all-keys"
			if len(p.CoalesceBy) > 0 {
				by = strings.Join(p.CoalesceBy, ",")
			}
			parts = append(parts, "coalesce="+by)
		}
		if p.BatchMaxEvents > 1 {
			parts = append(parts, fmt.Sprintf("batch=%d/%s", p.BatchMaxEvents, p.BatchMaxWait))
		}
		parts = append(parts, fmt.Sprintf("retry=%dx %s..%s", p.MaxAttempts, p.InitialBackoff, p.MaxBackoff),
			fmt.Sprintf("breaker=%d/%s", p.FailureThreshold, p.Cooldown))
		return strings.Join(parts, " ")
	case KindPartner, KindTier:
		return partnerSummary(d)
	case KindAlert:
		return alertSummary(d.Alert)
	case KindTradingPartner:
		return tradingPartnerSummary(d.TradingPartner)
	case KindAgentConfig:
		return agentConfigSummary(d.AgentConfig)
	}
	return ""
}
