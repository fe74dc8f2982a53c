package routing

import (
	"strings"
	"testing"
	"time"
)

// TestRetentionDocument: the contract's document parses to its effective retention and
// stores canonically; every validation rule names its field.
func TestRetentionDocument(t *testing.T) {
	doc := `apiVersion: crossdock.io/v1
kind: Retention
metadata:
  name: default
spec:
  default:
    keep: 720h
  types:
    - types: [inventory.level]
      keep: 2s
    - types: [order, order.ack, shipment, invoice, sales.return]
      keep: 17520h
  compact: [price, inventory.level, item]
  dedupWindow: 48h
`
	d, err := ParseOne([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	r := EffectiveRetention(d.Retention)
	if r.Keep("inventory.level") != 2*time.Second || r.Keep("order.ack") != 17520*time.Hour || r.Keep("price") != 720*time.Hour ||
		r.DedupWindow != 48*time.Hour || strings.Join(r.Compact, ",") != "inventory.level,item,price" {
		t.Fatalf("effective retention %+v", r)
	}
	c, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ParseOne(c)
	if err != nil {
		t.Fatalf("canonical form does not parse: %v\n%s", err, c)
	}
	if c2, _ := d2.Canonical(); string(c2) != string(c) {
		t.Fatalf("canonical form is not stable:\n%s\n%s", c, c2)
	}
	if k, ok := ParseKind("retention"); !ok || k != KindRetention || k.Plural() != "retention" {
		t.Fatalf("ParseKind(retention) = %v %v", k, ok)
	}
	if def := EffectiveRetention(nil); def.Default != 720*time.Hour || def.Keep("inventory.level") != 168*time.Hour || def.Keep("invoice") != 17520*time.Hour || def.DedupWindow != 720*time.Hour {
		t.Fatalf("defaults %+v", def)
	}

	for _, tc := range []struct{ spec, want string }{
		{"default: {keep: 0s}", "spec.default.keep: must be more than 0"},
		{"default: {keep: -1h}", "spec.default.keep: must be more than 0"},
		{"types: [{types: [order], keep: 1h}, {types: [order], keep: 2h}]", "spec.types[1].types[0]: type \"order\" is already kept"},
		{"types: [{types: [orders], keep: 1h}]", "spec.types[0].types[0]: unknown event type \"orders\""},
		{"types: [{types: [order]}]", "spec.types[0].keep: required"},
		{"types: [{keep: 1h}]", "spec.types[0].types: required"},
		{"compact: [price, price]", "spec.compact[1]: type \"price\" is listed twice"},
		{"compact: [prices]", "spec.compact[0]: unknown event type"},
		{"dedupWindow: 59s", "spec.dedupWindow: must be at least 1m0s"},
		{"default: {keep: 1h, maxBytes: 10GiB}", "spec.default.maxBytes: is not enforced"},
		{"dedupWindow: soon", "spec.dedupWindow"},
	} {
		_, err := ParseOne([]byte("apiVersion: crossdock.io/v1\nkind: Retention\nmetadata: {name: default}\nspec:\n  " + tc.spec + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spec %s: error %v, want %q", tc.spec, err, tc.want)
		}
	}
	if _, err := ParseOne([]byte("apiVersion: crossdock.io/v1\nkind: Retention\nmetadata: {name: other}\nspec: {}\n")); err == nil || !strings.Contains(err.Error(), `must be named "default"`) {
		t.Errorf("a Retention not named default: %v", err)
	}
}

// TestRetentionEmptyListsSurviveStorage: `types: []` and `compact: []` replace the
// default rules (every type kept by default, nothing compacted), also after the document
// is stored (canonical form) and read back; absent, the defaults stay.
func TestRetentionEmptyListsSurviveStorage(t *testing.T) {
	for _, tc := range []struct {
		spec          string
		levels        time.Duration
		compactLevels bool
	}{
		{"  default: {keep: 5m}\n  types: []\n  compact: []\n", 5 * time.Minute, false},
		{"  default: {keep: 5m}\n", 168 * time.Hour, true},
	} {
		d, err := ParseOne([]byte("apiVersion: crossdock.io/v1\nkind: Retention\nmetadata: {name: default}\nspec:\n" + tc.spec))
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		stored, err := ParseOne(c)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", c, err)
		}
		for _, r := range []Retention{EffectiveRetention(d.Retention), EffectiveRetention(stored.Retention)} {
			if r.Keep("inventory.level") != tc.levels || strings.Contains(strings.Join(r.Compact, ","), "inventory.level") != tc.compactLevels {
				t.Fatalf("spec %q (stored as %s): levels kept %s, compact %v; want %s, compacted %v", tc.spec, c, r.Keep("inventory.level"), r.Compact, tc.levels, tc.compactLevels)
			}
		}
	}
}
