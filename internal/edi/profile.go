package edi

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/crossdock/crossdock/internal/x12"
)

// Profile is a trading partner's EDI profile: the spec of a TradingPartner document
// (`crossdock apply`) and, with the same fields, an entry of the edi connector's
// `partners` setting. Field names are the document's (camelCase).
type Profile struct {
	// Partner is the Crossdock partner name (a Partner document's metadata.name): the
	// `partner` of the orders its 850s become and of the acks, shipments and invoices
	// sent back to it.
	Partner string `json:"partner"`
	// ISAQualifier and ISAID are the partner's interchange id (ISA05/ISA06 of what it
	// sends, ISA07/ISA08 of what we send).
	ISAQualifier string `json:"isaQualifier"`
	ISAID        string `json:"isaId"`
	// OurQualifier and OurID are ours (ISA07/ISA08 of what it sends, ISA05/ISA06 of ours).
	OurQualifier string `json:"ourQualifier"`
	OurID        string `json:"ourId"`
	// GSSender is the partner's application code (GS02 of its groups, GS03 of ours);
	// GSReceiver ours. Empty means the ISA id.
	GSSender   string `json:"gsSender,omitempty"`
	GSReceiver string `json:"gsReceiver,omitempty"`
	// Version of the groups we send: 004010 (997 acks) or 005010 (999 acks).
	Version string `json:"version"`
	// Separators to write (what the partner reads); inbound ones come from its ISA.
	Separators *Separators `json:"separators,omitempty"`
	// Inbound and Outbound list the transaction sets exchanged (850, 997, 999, 855,
	// 856, 810, 846). An inbound set not listed is acknowledged and kept, not mapped.
	Inbound  []string `json:"inbound"`
	Outbound []string `json:"outbound"`
	// Usage is ISA15 of what we send: T (test) or P (production); inbound interchanges
	// with another usage indicator are refused.
	Usage string `json:"usage"`
	// Acks are the acknowledgement expectations.
	Acks AckExpectations `json:"acks,omitempty"`
}

// Separators are the delimiters written to a partner, each one character.
type Separators struct {
	Element    string `json:"element,omitempty"`    // default *
	Component  string `json:"component,omitempty"`  // default :
	Repetition string `json:"repetition,omitempty"` // default ^ (005010 only)
	Segment    string `json:"segment,omitempty"`    // default ~
	// LineBreak writes a newline after each segment terminator.
	LineBreak bool `json:"lineBreak,omitempty"`
}

// AckExpectations say what acknowledgements are sent and expected.
type AckExpectations struct {
	// TA1 asks the partner for a TA1 (ISA14 = 1) on what we send.
	TA1 bool `json:"ta1,omitempty"`
	// OverdueAfter is how long the partner has to send the 997/999 for a group we sent
	// (a Go duration, default 24h); "0s" expects none.
	OverdueAfter string `json:"overdueAfter,omitempty"`
}

// KnownSets are the transaction sets a profile may list.
var KnownSets = []string{"850", "855", "856", "810", "846", "997", "999"}

// DefaultOverdue is the acknowledgement window when a profile names none.
const DefaultOverdue = 24 * time.Hour

// Overdue returns the acknowledgement window (0: none expected).
func (p *Profile) Overdue() time.Duration {
	if p.Acks.OverdueAfter == "" {
		return DefaultOverdue
	}
	d, _ := time.ParseDuration(p.Acks.OverdueAfter)
	return d
}

// Delimiters returns the delimiters to write with (defaults filled in).
func (p *Profile) Delimiters() x12.Delimiters {
	d := x12.DefaultDelimiters
	d.Suffix = ""
	if s := p.Separators; s != nil {
		pick := func(v string, def byte) byte {
			if v == "" {
				return def
			}
			return v[0]
		}
		d.Element, d.Component, d.Repetition, d.Segment = pick(s.Element, d.Element), pick(s.Component, d.Component), pick(s.Repetition, d.Repetition), pick(s.Segment, d.Segment)
		if s.LineBreak {
			d.Suffix = "\n"
		}
	}
	if p.Version == "004010" {
		d.Repetition = 0
	}
	return d
}

// Header returns the ISA header of what we send to the partner.
func (p *Profile) Header() x12.Header {
	v := "00501"
	if p.Version == "004010" {
		v = "00401"
	}
	ack := "0"
	if p.Acks.TA1 {
		ack = "1"
	}
	return x12.Header{AuthQual: "00", SecurityQual: "00", SenderQual: p.OurQualifier, SenderID: p.OurID,
		ReceiverQual: p.ISAQualifier, ReceiverID: p.ISAID, Version: v, AckRequested: ack, Usage: p.Usage, Standards: "U"}
}

// AppCodes returns GS02 and GS03 of what we send (ours, theirs).
func (p *Profile) AppCodes() (sender, receiver string) {
	sender, receiver = p.GSReceiver, p.GSSender
	if sender == "" {
		sender = p.OurID
	}
	if receiver == "" {
		receiver = p.ISAID
	}
	return sender, receiver
}

// SenderKey is "qualifier:id" of the partner's ISA05/ISA06, as read (padding removed).
func (p *Profile) SenderKey() string { return p.ISAQualifier + ":" + p.ISAID }

// Sends reports whether the profile lists set id as outbound.
func (p *Profile) Sends(id string) bool { return slices.Contains(p.Outbound, id) }

// Receives reports whether the profile lists set id as inbound.
func (p *Profile) Receives(id string) bool { return slices.Contains(p.Inbound, id) }

// ProfileError is one problem of a profile: the field path and why.
type ProfileError struct {
	Path, Msg string
}

func (e ProfileError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks a profile; every problem is returned with its field path under
// prefix (e.g. "spec" or "partners[0]").
func (p *Profile) Validate(prefix string) []ProfileError {
	var out []ProfileError
	add := func(field, format string, args ...any) {
		out = append(out, ProfileError{Path: prefix + "." + field, Msg: fmt.Sprintf(format, args...)})
	}
	if p.Partner == "" {
		add("partner", "required: the name of the Partner this profile belongs to")
	}
	qual := func(field, v string) {
		if len(v) != 2 || strings.ContainsAny(v, " *~:^|") {
			add(field, "%q must be a 2-character ISA qualifier such as ZZ, 01, 08, 12", v)
		}
	}
	id := func(field, v string, max int) {
		if v == "" || len(v) > max || strings.TrimSpace(v) != v {
			add(field, "%q must be 1 to %d characters without surrounding spaces", v, max)
		}
	}
	qual("isaQualifier", p.ISAQualifier)
	qual("ourQualifier", p.OurQualifier)
	id("isaId", p.ISAID, 15)
	id("ourId", p.OurID, 15)
	if p.GSSender != "" {
		id("gsSender", p.GSSender, 15)
	}
	if p.GSReceiver != "" {
		id("gsReceiver", p.GSReceiver, 15)
	}
	if p.Version != "004010" && p.Version != "005010" {
		add("version", "%q must be 004010 or 005010", p.Version)
	}
	if p.Usage != "T" && p.Usage != "P" {
		add("usage", "%q must be T (test) or P (production)", p.Usage)
	}
	sets := func(field string, list []string, allowed []string) {
		seen := map[string]bool{}
		for i, s := range list {
			if !slices.Contains(allowed, s) {
				add(fmt.Sprintf("%s[%d]", field, i), "%q is not one of %s", s, strings.Join(allowed, ", "))
			}
			if seen[s] {
				add(fmt.Sprintf("%s[%d]", field, i), "%q appears twice", s)
			}
			seen[s] = true
		}
	}
	sets("inbound", p.Inbound, []string{"850", "997", "999"})
	sets("outbound", p.Outbound, []string{"855", "856", "810", "846", "850"})
	if s := p.Separators; s != nil {
		used := map[string]string{}
		for _, f := range []struct{ name, v string }{{"element", s.Element}, {"component", s.Component}, {"repetition", s.Repetition}, {"segment", s.Segment}} {
			if f.v == "" {
				continue
			}
			c := f.v[0]
			if len(f.v) != 1 || c == ' ' || c == 0 || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') {
				add("separators."+f.name, "%q must be one character that is not a letter, digit, space or NUL", f.v)
				continue
			}
			if other, ok := used[f.v]; ok {
				add("separators."+f.name, "%q is already the %s separator", f.v, other)
			}
			used[f.v] = f.name
		}
	}
	if v := p.Acks.OverdueAfter; v != "" {
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			add("acks.overdueAfter", "%q is not a duration such as 24h or 0s", v)
		}
	}
	return out
}
