package routing

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

const tradingPartnerDocs = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: standard}
spec: {}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: acme}
spec: {tier: standard, scopes: [orders:write], skus: ["*"]}
---
apiVersion: crossdock.io/v1
kind: TradingPartner
metadata: {name: acme-edi}
spec:
  partner: acme
  isaQualifier: ZZ
  isaId: ACMERETAIL
  ourQualifier: ZZ
  ourId: CROSSDOCK
  gsSender: ACMEAPP
  version: "005010"
  separators: {element: "|", component: ">", repetition: "^", segment: "~", lineBreak: true}
  inbound: ["850", "999"]
  outbound: ["855", "856", "810", "846"]
  usage: T
  acks: {ta1: true, overdueAfter: 4h}
`

// TestTradingPartnerDocument: a TradingPartner parses into an edi.Profile, stores in
// canonical form, survives a round trip and joins its Partner.
func TestTradingPartnerDocument(t *testing.T) {
	docs, err := Parse([]byte(tradingPartnerDocs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTable(docs, nil); err != nil {
		t.Fatal(err)
	}
	d := docs[2]
	if d.Kind != KindTradingPartner || d.TradingPartner == nil {
		t.Fatalf("kind %s, profile %v", d.Kind, d.TradingPartner)
	}
	p := d.TradingPartner
	if p.Partner != "acme" || p.SenderKey() != "ZZ:ACMERETAIL" || p.Overdue().Hours() != 4 || !p.Acks.TA1 {
		t.Fatalf("profile %+v", p)
	}
	if dl := p.Delimiters(); dl.Element != '|' || dl.Component != '>' || dl.Suffix != "\n" {
		t.Fatalf("delimiters %+v", dl)
	}
	if s, r := p.AppCodes(); s != "CROSSDOCK" || r != "ACMEAPP" {
		t.Fatalf("app codes %s %s", s, r)
	}
	y, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(y)
	if err != nil {
		t.Fatalf("canonical form does not parse: %v\n%s", err, y)
	}
	if y2, _ := again[0].Canonical(); string(y2) != string(y) {
		t.Fatalf("canonical form not stable:\n%s\n%s", y, y2)
	}
	if k, ok := ParseKind("tradingpartners"); !ok || k != KindTradingPartner || k.Plural() != "tradingpartners" {
		t.Fatalf("ParseKind: %v %v", k, ok)
	}
}

// TestTradingPartnerRefused: every bad field is named, and a profile without its
// Partner, or with another profile's interchange id, does not make a table.
func TestTradingPartnerRefused(t *testing.T) {
	bad := `apiVersion: crossdock.io/v1
kind: TradingPartner
metadata: {name: bad}
spec:
  isaQualifier: Z
  isaId: "  X"
  ourQualifier: ZZ
  ourId: ""
  version: "003040"
  separators: {element: "A", segment: "~", component: "~"}
  inbound: ["855"]
  outbound: ["850", "850"]
  usage: Q
  acks: {overdueAfter: soon}
`
	_, err := Parse([]byte(bad))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	for _, path := range []string{"spec.partner", "spec.isaQualifier", "spec.isaId", "spec.ourId", "spec.version", "spec.separators.element",
		"spec.separators.segment", "spec.inbound[0]", "spec.outbound[1]", "spec.usage", "spec.acks.overdueAfter"} {
		if !strings.Contains(err.Error(), path+":") && !strings.Contains(err.Error(), path+" ") {
			t.Errorf("no error at %s in:\n%v", path, err)
		}
	}
	orphan := strings.Replace(tradingPartnerDocs, "partner: acme\n", "partner: nobody\n", 1) + `---
apiVersion: crossdock.io/v1
kind: TradingPartner
metadata: {name: acme-edi-2}
spec: {partner: acme, isaQualifier: ZZ, isaId: ACMERETAIL, ourQualifier: ZZ, ourId: CROSSDOCK, version: "004010", usage: P, inbound: ["850"], outbound: []}
`
	docs, err := Parse([]byte(orphan))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewTable(docs, nil)
	if err == nil || !strings.Contains(err.Error(), `no partner "nobody"`) || !strings.Contains(err.Error(), "ZZ:ACMERETAIL is already tradingpartners/acme-edi's") {
		t.Fatalf("want the missing partner and the duplicate id, got %v", err)
	}
}

// TestEDIDocExamples: the documents shown in docs/edi.md parse.
func TestEDIDocExamples(t *testing.T) {
	b, err := os.ReadFile("../../docs/edi.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if !strings.Contains(m[1], "apiVersion: crossdock.io/v1") {
			continue
		}
		n++
		if _, err := Parse([]byte(m[1])); err != nil {
			t.Errorf("docs/edi.md:\n%s\n%v", m[1], err)
		}
	}
	if n != 2 {
		t.Fatalf("%d document examples in docs/edi.md, want 2", n)
	}
}
