package routing

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDocsExamples keeps docs/routing.md honest: every YAML example parses, and every
// mapping and filter snippet compiles.
func TestDocsExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d yaml blocks in docs/routing.md", len(blocks))
	}
	for i, m := range blocks {
		body := m[1]
		switch {
		case strings.Contains(body, "kind: Route            # Destination"):
			continue // the header sketch
		case strings.Contains(body, "apiVersion:"):
			if _, err := Parse([]byte(body)); err != nil {
				t.Errorf("yaml block %d does not parse: %v", i, err)
			}
		default:
			for _, snippet := range strings.Split(body, "\n\n") {
				doc := "apiVersion: crossdock.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n  " +
					strings.ReplaceAll(strings.TrimSpace(snippet), "\n", "\n  ") + "\n  destination: d\n"
				if _, err := ParseOne([]byte(doc)); err != nil {
					t.Errorf("snippet in yaml block %d does not compile: %v\n%s", i, err, snippet)
				}
			}
		}
	}
}

// TestDocsPolicyDefaults keeps docs/routing.md's Policy table and DefaultPolicy (the one
// definition of the defaults, also what the delivery engine fills in) from drifting:
// every field of a Policy document has a row, and every row's default is the code's.
func TestDocsPolicyDefaults(t *testing.T) {
	b, err := os.ReadFile("../../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := policyTable(t, string(b))

	// Every field a Policy document can set, from PolicySpec's JSON names.
	var fields []string
	st := reflect.TypeOf(PolicySpec{})
	for i := range st.NumField() {
		sec := st.Field(i)
		for j := range sec.Type.Elem().NumField() {
			f := sec.Type.Elem().Field(j)
			fields = append(fields, jsonName(sec)+"."+jsonName(f))
		}
	}
	for _, f := range fields {
		if _, ok := rows[f]; !ok {
			t.Errorf("docs/routing.md's Policy table has no row for %s", f)
		}
	}
	if len(rows) != len(fields) {
		t.Errorf("docs/routing.md's Policy table has %d rows, a Policy has %d fields %v: %v", len(rows), len(fields), fields, rows)
	}

	d := DefaultPolicy
	dur := func(field string, want time.Duration) {
		t.Helper()
		m := regexp.MustCompile("^`([^`]+)`").FindStringSubmatch(rows[field])
		if m == nil {
			t.Errorf("docs %s default %q: want a duration in backquotes", field, rows[field])
			return
		}
		got, err := time.ParseDuration(m[1])
		if err != nil || got != want {
			t.Errorf("docs say %s defaults to %s, code has %s", field, m[1], want)
		}
	}
	num := func(field string, want int) {
		t.Helper()
		m := regexp.MustCompile(`^(\d+)\b`).FindStringSubmatch(rows[field])
		if m == nil {
			t.Errorf("docs %s default %q: want a number", field, rows[field])
			return
		}
		if got, _ := strconv.Atoi(m[1]); got != want {
			t.Errorf("docs say %s defaults to %d, code has %d", field, got, want)
		}
	}
	text := func(field, want string) {
		t.Helper()
		if rows[field] != want {
			t.Errorf("docs say %s defaults to %q; from the code it is %q", field, rows[field], want)
		}
	}
	if d.RatePerSecond == 0 {
		text("rateLimit.perSecond", "unlimited")
	} else {
		text("rateLimit.perSecond", fmt.Sprint(d.RatePerSecond))
	}
	// The burst default is a rule, not a value: check the rule.
	text("rateLimit.burst", "one second's worth (≥ 1)")
	for rate, want := range map[float64]int{0.2: 1, 1: 1, 2.5: 3, 100: 100} {
		if got := EffectivePolicy("", &PolicySpec{RateLimit: &RateLimitSpec{PerSecond: rate}}).Burst; got != want {
			t.Errorf("burst of a %v/s rate limit without burst = %d, docs say one second's worth (%d)", rate, got, want)
		}
		if got := (Policy{RatePerSecond: rate}).WithDefaults().Burst; got != want {
			t.Errorf("WithDefaults burst of a %v/s rate = %d, docs say one second's worth (%d)", rate, got, want)
		}
	}
	text("coalesce.enabled", fmt.Sprintf("`%t`", d.Coalesce))
	if len(d.CoalesceBy) != 0 {
		t.Errorf("DefaultPolicy.CoalesceBy = %v; docs say all of the event's business keys", d.CoalesceBy)
	}
	text("coalesce.by", "all of the event's business keys")
	num("batch.maxEvents", d.BatchMaxEvents)
	dur("batch.maxWait", d.BatchMaxWait)
	num("retry.maxAttempts", d.MaxAttempts)
	dur("retry.initialBackoff", d.InitialBackoff)
	dur("retry.maxBackoff", d.MaxBackoff)
	num("circuitBreaker.failureThreshold", d.FailureThreshold)
	dur("circuitBreaker.cooldown", d.Cooldown)

	// The three ways to get a default policy agree.
	if got := EffectivePolicy("", nil); !reflect.DeepEqual(got, d) {
		t.Errorf("EffectivePolicy(nil) = %+v, DefaultPolicy = %+v", got, d)
	}
	if got := EffectivePolicy("", &PolicySpec{}); !reflect.DeepEqual(got, d) {
		t.Errorf("EffectivePolicy(empty spec) = %+v, DefaultPolicy = %+v", got, d)
	}
	if got := (Policy{}).WithDefaults(); !reflect.DeepEqual(got, d) {
		t.Errorf("Policy{}.WithDefaults() = %+v, DefaultPolicy = %+v", got, d)
	}
}

// policyTable returns the default column of the table under "### Policy", by field.
func policyTable(t *testing.T, doc string) map[string]string {
	t.Helper()
	_, sec, ok := strings.Cut(doc, "\n### Policy\n")
	if !ok {
		t.Fatal("docs/routing.md has no ### Policy section")
	}
	sec, _, _ = strings.Cut(sec, "\n### ")
	rows := map[string]string{}
	row := regexp.MustCompile("^\\| `([A-Za-z.]+)` \\| ([^|]+) \\|")
	for _, line := range strings.Split(sec, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			rows[m[1]] = strings.TrimSpace(m[2])
		}
	}
	if len(rows) == 0 {
		t.Fatal("docs/routing.md's Policy section has no table of defaults")
	}
	return rows
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}
