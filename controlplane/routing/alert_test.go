package routing

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestAlertDocumentParsesWithTierThresholds(t *testing.T) {
	docs, err := Parse([]byte(`apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: shop-lag}
spec:
  condition: destinationLag
  severity: critical
  destinations: ["shop-*"]
  threshold: {lagEvents: 1000, lagAge: 2m}
  tiers:
    gold: {lagAge: 30s}
  for: 10s
  notify: [oncall]
`))
	if err != nil {
		t.Fatal(err)
	}
	a := docs[0].Alert
	if got := a.EffectiveThreshold(""); got.LagEvents != 1000 || got.LagAge != 2*time.Minute {
		t.Errorf("default threshold = %+v, want 1000 events, 2m", got)
	}
	if got := a.EffectiveThreshold("gold"); got.LagEvents != 1000 || got.LagAge != 30*time.Second {
		t.Errorf("gold threshold = %+v, want 1000 events (inherited), 30s (the tier's)", got)
	}
	if got := a.EffectiveThreshold("silver"); got.LagAge != 2*time.Minute {
		t.Errorf("a tier without overrides = %+v, want the document's 2m", got)
	}
	if a.ForDuration() != 10*time.Second || a.SeverityOrDefault() != "critical" {
		t.Errorf("for=%s severity=%s", a.ForDuration(), a.SeverityOrDefault())
	}
	if s := Summary(docs[0]); !strings.Contains(s, "destinationLag") || !strings.Contains(s, "tiers=gold") {
		t.Errorf("summary %q", s)
	}
}

func TestAlertDocumentErrorsNameTheField(t *testing.T) {
	for name, tc := range map[string]struct{ spec, want string }{
		"unknown condition": {`{condition: lagging}`, `alerts/a: spec.condition: unknown condition "lagging"`},
		"missing threshold": {`{condition: destinationLag}`, `alerts/a: spec.threshold: required for destinationLag: set lagEvents or lagAge`},
		"foreign threshold": {`{condition: agentOffline, threshold: {lagEvents: 3}}`, `alerts/a: spec.threshold.lagEvents: not a threshold of agentOffline (it takes offlineFor)`},
		"foreign selector":  {`{condition: agentOffline, destinations: [x]}`, `alerts/a: spec.destinations: not a selector of agentOffline (it takes agents)`},
		"tiers on agents":   {`{condition: agentOffline, tiers: {gold: {offlineFor: 1m}}}`, `alerts/a: spec.tiers: agentOffline does not watch partners, so it has no tiers`},
		"ratio above 1":     {`{condition: errorRate, threshold: {errorRatio: 5}}`, `alerts/a: spec.threshold.errorRatio: must be more than 0 and at most 1`},
		"window not errors": {`{condition: breakerOpen, window: 1m}`, `alerts/a: spec.window: only errorRate has a window`},
		"bad severity":      {`{condition: breakerOpen, severity: page}`, `alerts/a: spec.severity: must be warning or critical, got "page"`},
		"negative duration": {`{condition: inventoryStale, threshold: {staleFor: -1m}}`, `alerts/a: spec.threshold.staleFor: must be more than 0`},
		"unknown field":     {`{condition: breakerOpen, treshold: {}}`, `alerts/a: spec.treshold: unknown field`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte("apiVersion: crossdock.io/v1\nkind: Alert\nmetadata: {name: a}\nspec: " + tc.spec + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n%v\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func TestAlertNotifyMustNameAWebhookDestination(t *testing.T) {
	docs, err := Parse([]byte(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: erp}
spec: {type: agent, agent: wh-1, connector: erp}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: a}
spec: {condition: breakerOpen, notify: [erp, pager], tiers: {gold: {}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewTable(docs, nil)
	for _, want := range []string{
		`alerts/a: spec.notify[0]: destination "erp" is a agent destination; alerts are sent to webhook destinations`,
		`alerts/a: spec.notify[1]: no destination "pager"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\ndoes not contain %q", err, want)
		}
	}
}

// TestObservabilityDocAlertExamples keeps docs/observability.md's Alert examples valid:
// every YAML block parses and its references resolve.
func TestObservabilityDocAlertExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) == 0 {
		t.Fatal("docs/observability.md has no yaml block")
	}
	for i, m := range blocks {
		docs, err := Parse([]byte(m[1]))
		if err != nil {
			t.Errorf("yaml block %d: %v", i+1, err)
			continue
		}
		if _, err := NewTable(docs, nil); err != nil {
			t.Errorf("yaml block %d: %v", i+1, err)
		}
	}
}
