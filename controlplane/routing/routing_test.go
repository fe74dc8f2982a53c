package routing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func level(sku, location, available string) *eventv1.CommittedEvent {
	return &eventv1.CommittedEvent{
		Seq:         42,
		Agent:       "erp-east",
		AgentSeq:    7,
		CommittedAt: timestamppb.New(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)),
		Event: &eventv1.Event{
			Id: "erp-east/pg/1", Type: "inventory.level",
			Keys:       map[string]string{"sku": sku, "location": location},
			OccurredAt: timestamppb.New(time.Date(2026, 3, 1, 7, 59, 0, 500_000_000, time.UTC)),
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
				Sku: sku, Location: location, OnHand: "15", Allocated: "3", Available: available,
			}},
		},
	}
}

// route parses a Route document with the given spec lines (already indented two spaces).
func route(t testing.TB, spec string) *Route {
	t.Helper()
	d, err := ParseOne([]byte("apiVersion: crossdock.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n" + spec + "\n  destination: d\n"))
	if err != nil {
		t.Fatalf("parse route: %v", err)
	}
	r, err := NewRoute(d, 1)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseMarketplaceExample(t *testing.T) {
	b, err := os.ReadFile("testdata/marketplace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(docs) != 3 || docs[0].Kind != KindPolicy || docs[1].Kind != KindDestination || docs[2].Kind != KindRoute {
		t.Fatalf("parsed %d documents", len(docs))
	}
	tab, err := NewTable(docs, map[string]uint64{"routes/marketplace-inventory": 3})
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	p := tab.Policy("marketplace")
	want := Policy{Name: "marketplace-2rps", RatePerSecond: 2, Burst: 40, Coalesce: true, CoalesceBy: []string{"sku"},
		BatchMaxEvents: 1, BatchMaxWait: time.Second, MaxAttempts: 8, InitialBackoff: time.Second, MaxBackoff: time.Minute,
		FailureThreshold: 5, Cooldown: 30 * time.Second}
	if pj, wj := mustJSON(t, p), mustJSON(t, want); pj != wj {
		t.Errorf("effective policy\n got %s\nwant %s", pj, wj)
	}
	dst, ok := tab.Destination("marketplace")
	if !ok || dst.Timeout != 5*time.Second || dst.Spec.Headers["X-Seller"] != "acme" {
		t.Errorf("destination = %+v", dst)
	}
	rs := tab.RoutesFor("marketplace")
	if len(rs) != 1 || rs[0].Name != "marketplace-inventory" || rs[0].Version != 3 {
		t.Fatalf("RoutesFor = %v", rs)
	}
	if got := tab.Policy("nope"); got.MaxAttempts != DefaultPolicy.MaxAttempts || got.Name != "" {
		t.Errorf("unknown destination policy = %+v, want DefaultPolicy", got)
	}

	matched, payload, err := rs[0].Evaluate(level("ABC-1", "main", "12"))
	if err != nil || !matched {
		t.Fatalf("Evaluate = %v, %s, %v", matched, payload, err)
	}
	if got, want := string(payload), `{"quantity":12,"seq":42,"sku":"ABC-1","updated_at":"2026-03-01T07:59:00.5Z"}`; got != want {
		t.Errorf("payload\n got %s\nwant %s", got, want)
	}
	// Key glob, type and filter each exclude.
	for name, ce := range map[string]*eventv1.CommittedEvent{
		"sku outside the glob": level("XYZ-1", "main", "1"),
		"filtered location":    level("ABC-1", "overflow", "1"),
	} {
		if m, p, err := rs[0].Evaluate(ce); m || p != nil || err != nil {
			t.Errorf("%s: Evaluate = %v, %s, %v; want not matched", name, m, p, err)
		}
	}
	price := level("ABC-1", "main", "1")
	price.Event.Type = "price"
	if m, _, _ := rs[0].Evaluate(price); m {
		t.Error("a price event matched an inventory.level route")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseErrorsNameTheField(t *testing.T) {
	head := func(kind, name string) string {
		return "apiVersion: crossdock.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name + "\nspec:\n"
	}
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"misspelt type", head("Route", "amazon-inventory") + "  match:\n    types: [inventory.level, inventry.level]\n  destination: amazon\n",
			[]string{`routes/amazon-inventory: spec.match.types[1]: unknown event type "inventry.level"`}},
		{"unknown field", head("Route", "r") + "  match: {typez: [item]}\n  destination: d\n",
			[]string{"routes/r: spec.match.typez: unknown field (known: types, keys)"}},
		{"wrong type", head("Policy", "p") + "  rateLimit: {perSecond: fast}\n",
			[]string{`policies/p: spec.rateLimit.perSecond: want a number, got "fast"`}},
		{"bad duration", head("Policy", "p") + "  retry: {initialBackoff: 5}\n",
			[]string{"policies/p: spec.retry.initialBackoff: want a duration string"}},
		{"backoff order", head("Policy", "p") + "  retry: {initialBackoff: 1m, maxBackoff: 1s}\n",
			[]string{"policies/p: spec.retry.maxBackoff: 1s is less than initialBackoff 1m0s"}},
		{"cel syntax", head("Route", "r") + "  mapping: '{\"a\": event.}'\n  destination: d\n",
			[]string{"routes/r: spec.mapping: CEL:"}},
		{"cel unknown field", head("Route", "r") + "  mapping: '{\"q\": event.inventory_level.onhand}'\n  destination: d\n",
			[]string{"routes/r: spec.mapping: CEL:", "undefined field 'onhand'"}},
		{"filter not bool", head("Route", "r") + "  filter: event.type\n  destination: d\n",
			[]string{"routes/r: spec.filter: CEL: a filter must be a bool expression, this one is string"}},
		{"no destination", head("Route", "r") + "  match: {types: [item]}\n",
			[]string{"routes/r: spec.destination: required"}},
		{"key glob name", head("Route", "r") + "  match: {keys: {SKU: x}}\n  destination: d\n",
			[]string{"routes/r: spec.match.keys.SKU: key name must be lower_snake_case"}},
		{"webhook http", head("Destination", "d") + "  type: webhook\n  url: http://example.com/x\n  secret: " + secret + "\n",
			[]string{"destinations/d: spec.url: must be https"}},
		{"webhook secret", head("Destination", "d") + "  type: webhook\n  url: https://example.com/x\n  secret: hunter2\n",
			[]string{`destinations/d: spec.secret: must start with "whsec_"`}},
		{"reserved header", head("Destination", "d") + "  type: webhook\n  url: https://example.com/x\n  secret: " + secret + "\n  headers: {Webhook-Signature: x}\n",
			[]string{"destinations/d: spec.headers.Webhook-Signature: set by the delivery engine"}},
		{"field of another type", head("Destination", "d") + "  type: stream\n  partner: acme\n  url: https://example.com\n",
			[]string{"destinations/d: spec.url: only for type webhook, not stream"}},
		{"stream secret", head("Destination", "d") + "  type: stream\n  partner: acme\n  secret: hunter2\n",
			[]string{`destinations/d: spec.secret: must start with "whsec_"`}},
		{"agent secret", head("Destination", "d") + "  type: agent\n  agent: a\n  connector: c\n  secret: " + secret + "\n",
			[]string{"destinations/d: spec.secret: only for type webhook, not agent"}},
		{"unknown destination type", head("Destination", "d") + "  type: ftp\n",
			[]string{`destinations/d: spec.type: unknown destination type "ftp"`}},
		{"bad name", head("Route", "Bad Name") + "  destination: d\n",
			[]string{`document 1 (line 1): metadata.name: "Bad Name" must be 1-64 characters`}},
		{"bad kind", "apiVersion: crossdock.io/v1\nkind: Router\nmetadata: {name: r}\nspec: {}\n",
			[]string{`document 1 (line 1): kind: must be Destination, Route, Policy, Retention, Tier, Partner, Alert, TradingPartner or AgentConfig, got "Router"`}},
		{"bad version", "apiVersion: v2\nkind: Route\nmetadata: {name: r}\nspec: {destination: d}\n",
			[]string{`routes/r: apiVersion: must be "crossdock.io/v1", got "v2"`}},
		{"yaml", "apiVersion: [\n", []string{"document 1 (line 1): not valid YAML"}},
		{"duplicate key", "apiVersion: crossdock.io/v1\napiVersion: crossdock.io/v1\n", []string{"not valid YAML", "apiVersion"}},
		{"twice", head("Policy", "p") + "  {}\n---\n" + head("Policy", "p") + "  {}\n",
			[]string{"policies/p: defined twice (documents 1 and 2)"}},
		{"second document line", head("Policy", "p") + "  {}\n---\nkind: 3\n",
			[]string{"document 2 (line 8): apiVersion"}},
		{"empty", "# nothing\n---\n", []string{"no documents found"}},
		{"yaml line of the file", head("Policy", "p") + "  {}\n---\napiVersion: crossdock.io/v1\nkind: Policy\n  bad: indent\n",
			[]string{"document 2 (line 8): not valid YAML: yaml: line 10:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("Parse accepted an invalid document")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %T does not wrap ErrInvalid as a *ValidationError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: p}
spec:
  rateLimit: {perSecond: -1, burst: -2}
  batch: {maxEvents: 0}
`))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	for i, path := range []string{"spec.rateLimit.perSecond", "spec.rateLimit.burst", "spec.batch.maxEvents"} {
		if ve.Errors[i].Path != path || ve.Errors[i].Doc != "policies/p" {
			t.Errorf("problem %d = %+v, want path %s", i, ve.Errors[i], path)
		}
	}
}

func TestTableChecksReferences(t *testing.T) {
	docs, err := Parse([]byte(`apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: d}
spec: {type: webhook, url: "https://x.example/h", secret: ` + secret + `, policy: batching}
---
apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: batching}
spec: {batch: {maxEvents: 50}}
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: r}
spec: {destinations: [d, missing]}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewTable(docs, nil)
	for _, want := range []string{
		`destinations/d: spec.acceptsBatches: policy "batching" batches up to 50 events but this webhook does not accept batches`,
		`routes/r: spec.destinations[1]: no destination "missing"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewTable error %v\ndoes not contain %q", err, want)
		}
	}
}

func TestMappings(t *testing.T) {
	ce := level("ABC-1", "main", "12")
	for _, tc := range []struct {
		name, mapping, want string
	}{
		{"default is the canonical event", "",
			`{"id":"erp-east/pg/1","type":"inventory.level","keys":{"location":"main","sku":"ABC-1"},"occurred_at":"2026-03-01T07:59:00.500Z","inventory_level":{"sku":"ABC-1","location":"main","on_hand":"15","allocated":"3","available":"12"}}`},
		{"message field as protojson", "event.inventory_level",
			`{"sku":"ABC-1","location":"main","on_hand":"15","allocated":"3","available":"12"}`},
		{"list of scalars", "[event.keys.sku, 1, 2.5, true, null, b'hi']", `["ABC-1",1,2.5,true,null,"aGk="]`},
		{"string", "event.keys.sku.lowerAscii()", `"abc-1"`},
		{"committed info", `{"seq": committed.seq, "at": committed.committed_at, "agent": committed.agent}`,
			`{"agent":"erp-east","at":"2026-03-01T08:00:00Z","seq":42}`},
		{"decimal arithmetic", `{"qty": double(event.inventory_level.available) * 2.0}`, `{"qty":24}`},
		{"absent payload reads as zero", `{"has": has(event.order), "num": event.order.order_number}`, `{"has":false,"num":""}`},
		{"comprehension", `{"keys": event.keys.map(k, k + "=" + event.keys[k]).sort()}`, `{"keys":["location=main","sku=ABC-1"]}`},
		{"optional", `{"o": event.keys[?"missing"].orValue("none")}`, `{"o":"none"}`},
		{"duration", `duration("1m30s")`, `"90s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := "  match: {types: [inventory.level]}"
			if tc.mapping != "" {
				spec += "\n  mapping: '" + strings.ReplaceAll(tc.mapping, "'", "''") + "'"
			}
			m, p, err := route(t, spec).Evaluate(ce)
			if err != nil || !m {
				t.Fatalf("Evaluate = %v, %v", m, err)
			}
			if string(p) != tc.want {
				t.Errorf("payload\n got %s\nwant %s", p, tc.want)
			}
		})
	}
}

func TestEvaluationErrors(t *testing.T) {
	ce := level("ABC-1", "main", "twelve")
	for _, tc := range []struct {
		name, spec string
		is         error
		want       string
	}{
		{"runtime error", "  mapping: '{\"q\": int(event.inventory_level.available)}'", nil,
			"route r: mapping: type conversion error from 'string' to 'int'"},
		{"missing map key", "  mapping: 'event.keys[\"nope\"]'", nil, "route r: mapping: no such key: nope"},
		{"non-string key", "  mapping: '{1: 2}'", ErrPayload, "JSON object keys must be strings"},
		{"nan", "  mapping: '0.0 / 0.0'", ErrPayload, "has no JSON form"},
		{"cost limit", "  mapping: '[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e)))))'",
			ErrCostLimit, "route r: mapping: CEL cost limit exceeded (limit 100000)"},
		{"cost limit in filter", "  filter: '[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, a+b+c+d+e))))).size() > 0'",
			ErrCostLimit, "route r: filter: CEL cost limit exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, p, err := route(t, tc.spec).Evaluate(ce)
			var ee *EvalError
			if !m || p != nil || !errors.As(err, &ee) {
				t.Fatalf("Evaluate = %v, %s, %v; want matched with an *EvalError", m, p, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestEvaluationTimeout(t *testing.T) {
	// A context that is already done stops a comprehension at its first interrupt check:
	// the same path EvalTimeout takes.
	r := route(t, "  mapping: '[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, a+b+c)))'")
	ctx, cancel := contextDone()
	defer cancel()
	_, _, err := r.EvaluateContext(ctx, level("A", "B", "1"))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestSecrets(t *testing.T) {
	doc := "apiVersion: crossdock.io/v1\nkind: Destination\nmetadata: {name: d}\nspec: {type: webhook, url: 'https://x.example', secret: '${env:MARKET_SECRET}'}\n" +
		"---\napiVersion: crossdock.io/v1\nkind: Destination\nmetadata: {name: e}\nspec: {type: webhook, url: 'https://y.example', secret: '${file:secret.txt}'}\n"
	docs, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := RequireResolved(docs); err == nil || !strings.Contains(err.Error(), "destinations/d: spec.secret: ${env:MARKET_SECRET} must be resolved") {
		t.Errorf("RequireResolved = %v", err)
	}
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	read := func(p string) ([]byte, error) {
		if p != "secret.txt" {
			return nil, os.ErrNotExist
		}
		return []byte(secret + "\n"), nil
	}
	if err := ResolveSecrets(docs, lookup, read); err == nil || !strings.Contains(err.Error(), "environment variable MARKET_SECRET is not set") {
		t.Errorf("ResolveSecrets without the variable = %v", err)
	}
	env["MARKET_SECRET"] = "not-a-secret"
	if err := ResolveSecrets(docs, lookup, read); err == nil || !strings.Contains(err.Error(), "env from MARKET_SECRET: must start with") {
		t.Errorf("ResolveSecrets with a bad value = %v", err)
	}
	env["MARKET_SECRET"] = secret
	if err := ResolveSecrets(docs, lookup, read); err != nil {
		t.Fatal(err)
	}
	if docs[0].Destination.Secret != secret || docs[1].Destination.Secret != secret || RequireResolved(docs) != nil {
		t.Error("secrets not resolved")
	}
	key, err := SecretKey(secret)
	if err != nil || len(key) != 24 {
		t.Errorf("SecretKey = %d bytes, %v", len(key), err)
	}
	masked, _ := docs[0].Masked().Canonical()
	if strings.Contains(string(masked), secret) || !strings.Contains(string(masked), "***masked*** sha256:") {
		t.Errorf("masked document shows the secret:\n%s", masked)
	}
	if docs[0].Destination.Secret != secret {
		t.Error("Masked changed the original")
	}
}

func TestCanonicalIsStable(t *testing.T) {
	a := "# comment\napiVersion: crossdock.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n  destination: d\n  match: {types: [item], keys: {sku: 'A*'}}\n"
	b := "kind: Route\napiVersion: \"crossdock.io/v1\"\nspec:\n  match:\n    keys:\n      sku: A*\n    types:\n    - item\n  destination: d\nmetadata:\n  name: r\n"
	da, err := ParseOne([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	db, err := ParseOne([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := da.Canonical()
	cb, _ := db.Canonical()
	if string(ca) != string(cb) {
		t.Errorf("same content, different canonical forms:\n%s\n---\n%s", ca, cb)
	}
	// The canonical form parses back to itself.
	dc, err := ParseOne(ca)
	if err != nil {
		t.Fatal(err)
	}
	if cc, _ := dc.Canonical(); string(cc) != string(ca) {
		t.Errorf("canonical form is not a fixed point:\n%s\n---\n%s", ca, cc)
	}
}

func TestDiff(t *testing.T) {
	old := "a\nb\nc\nd\ne\nf\ng\nh\nj\n"
	new := "a\nb\nc\nD\ne\nf\ng\nh\nj\ni\n"
	want := "  b\n  c\n- d\n+ D\n  e\n  f\n  ...\n  h\n  j\n+ i\n"
	if got := Diff(old, new); got != want {
		t.Errorf("Diff\n got %q\nwant %q", got, want)
	}
	if Diff(old, old) != "" {
		t.Error("Diff of equal texts is not empty")
	}
	if got := Diff("", "x\n"); got != "+ x\n" {
		t.Errorf("Diff from nothing = %q", got)
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"ABC-*", "ABC-1", true}, {"ABC-*", "ABC-", true}, {"ABC-*", "AB", false},
		{"*-1", "ABC-1", true}, {"A?C", "ABC", true}, {"A?C", "AC", false},
		{"exact", "exact", true}, {"exact", "exact2", false}, {"*", "", true},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"**", "x", true},
	} {
		if got := globMatch(tc.pat, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}

func contextDone() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

// A stream destination may carry a secret: the partner's credential for Subscribe.
func TestStreamDestinationSecret(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a partner secret of 32 bytes...."))
	for _, s := range []string{secret, "${env:PARTNER_SECRET}"} {
		src := "apiVersion: crossdock.io/v1\nkind: Destination\nmetadata: {name: feed}\nspec:\n  type: stream\n  partner: acme\n  secret: " + s + "\n"
		docs, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("secret %q: %v", s, err)
		}
		if got := docs[0].Destination.Secret; got != s {
			t.Errorf("secret = %q, want %q", got, s)
		}
	}
}
