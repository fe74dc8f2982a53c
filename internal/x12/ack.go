package x12

import (
	"strconv"
	"time"
)

// ImplRef999 is the ST03 and GS08 of the 999 implementation acknowledgement.
const ImplRef999 = "005010X231A1"

// Uses999 reports whether a group of version v is acknowledged with a 999 (005010
// and later) rather than a 997.
func Uses999(version string) bool {
	return len(version) >= 3 && version[:3] >= "005"
}

// GroupStatus is the AK901 code of a group: R when the group's envelope is bad or no
// set was accepted, P when some were, E when all were but some with errors, else A.
func GroupStatus(g *Group) (status string, accepted int) {
	switch {
	case g.Err != nil:
		return StatusRejected, 0
	case g.AcceptedSets == g.Received && g.WithErrors > 0:
		return StatusWithErrors, g.AcceptedSets
	case g.AcceptedSets == g.Received:
		return StatusAccepted, g.AcceptedSets
	case g.AcceptedSets == 0:
		return StatusRejected, 0
	}
	return StatusPartial, g.AcceptedSets
}

// FunctionalAck builds the 997 (for 004010 and earlier groups) or 999 (005010 on) for
// an inbound group, from its Results (so not with Reader.DiscardResults unless the
// caller fills Results itself). d are the delimiters the ack will be written with:
// everything echoed from the inbound data has them removed.
func FunctionalAck(g *Group, d Delimiters) *Set {
	is999 := Uses999(g.Version)
	ack := &Set{ID: "997"}
	p := "AK"
	if is999 {
		ack.ID, ack.ImplRef, p = "999", ImplRef999, "IK"
	}
	add := func(s Segment) { ack.Segments = append(ack.Segments, s) }
	// Everything echoed from the inbound group is cleaned of the ack's delimiters.
	c := func(v string) string { return clean(v, d) }
	if is999 {
		add(Seg("AK1", c(g.FunctionalID), c(g.Control), c(g.Version)))
	} else {
		add(Seg("AK1", c(g.FunctionalID), c(g.Control)))
	}
	for _, r := range g.Results {
		if is999 {
			add(Seg("AK2", c(r.ID), c(r.Control), c(r.ImplRef)))
		} else {
			add(Seg("AK2", c(r.ID), c(r.Control)))
		}
		for _, e := range r.Errors {
			add(Seg(p+"3", c(e.ID), strconv.Itoa(e.SetPos), e.Loop, e.Code))
			if is999 && r.BusinessUnit != "" {
				// Business unit identifier: which document of the set the error is in.
				add(Segment{ID: "CTX", Elements: []Element{NewElement(r.BusinessUnit, clean(r.BusinessRef, d))}})
			}
			for _, el := range e.Elements {
				pos := []string{strconv.Itoa(el.Pos)}
				if el.Component > 0 || el.Rep > 0 {
					pos = append(pos, itoa0(el.Component))
				}
				if is999 && el.Rep > 0 {
					pos = append(pos, strconv.Itoa(el.Rep))
				}
				add(Segment{ID: p + "4", Elements: []Element{NewElement(pos...), NewElement(el.Ref), NewElement(el.Code), NewElement(clean(el.Data, d))}})
			}
		}
		codes := r.Codes
		if len(codes) > 5 {
			codes = codes[:5]
		}
		add(Seg(p+"5", append([]string{r.Status}, codes...)...))
	}
	status, accepted := GroupStatus(g)
	ak9 := []string{status, strconv.Itoa(g.Included), strconv.Itoa(g.Received), strconv.Itoa(accepted)}
	if g.Err != nil {
		ak9 = append(ak9, g.Err.Code)
	}
	if g.Included == 0 && g.Err != nil && g.Err.Code == GroupTrailerMissing {
		ak9[1] = strconv.Itoa(g.Received)
	}
	add(Seg("AK9", ak9...))
	return ack
}

func itoa0(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// clean keeps echoed data writable: only printable ASCII other than the delimiters is
// kept, cut to 99 characters (the AK404 maximum).
func clean(v string, d Delimiters) string {
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v) && len(b) < 99; i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e || c == d.Element || c == d.Component || c == d.Segment || (d.Repetition != 0 && c == d.Repetition) {
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// InterchangeStatus is the TA104 and TA105 for an interchange: R with the refusal's
// note, E with the first noted problem, or A 000.
func InterchangeStatus(ic *Interchange) (status, note string) {
	switch {
	case ic.Err != nil:
		return StatusRejected, ic.Err.Note
	case len(ic.Noted) > 0:
		return StatusWithErrors, ic.Noted[0].Note
	}
	return StatusAccepted, NoteOK
}

// NeedsTA1 reports whether an interchange gets a TA1: when ISA14 asks for one, or when
// its envelope is refused or has noted problems.
func NeedsTA1(ic *Interchange) bool {
	return ic.Header.AckRequested == "1" || ic.Err != nil || len(ic.Noted) > 0
}

// AckOptions set what the acknowledging interchange carries.
type AckOptions struct {
	Now        time.Time  // date and time written in ISA09/10, GS04/05
	Delimiters Delimiters // the delimiters the acknowledgement will be written with
	Usage      string     // ISA15; defaults to the inbound interchange's
}

// Acknowledge builds the interchange that answers ic: sender and receiver swapped, a
// TA1 when NeedsTA1, and when ic was not refused one FA group per inbound group with
// its 997 or 999. Groups of acknowledgements (GS01 FA) are not acknowledged. It
// returns nil when nothing is owed. Control numbers are left for the Writer's Numbers.
func Acknowledge(ic *Interchange, opts AckOptions) *Interchange {
	h := ic.Header
	c := func(v string) string { return clean(v, opts.Delimiters) }
	h.SenderQual, h.SenderID, h.ReceiverQual, h.ReceiverID = c(h.SenderQual), c(h.SenderID), c(h.ReceiverQual), c(h.ReceiverID)
	h.Control, h.Date, h.Time, h.Usage = c(h.Control), c(h.Date), c(h.Time), c(h.Usage)
	usage := opts.Usage
	if usage == "" {
		usage = h.Usage
	}
	out := &Interchange{Header: Header{
		AuthQual: "00", SecurityQual: "00",
		SenderQual: h.ReceiverQual, SenderID: h.ReceiverID, ReceiverQual: h.SenderQual, ReceiverID: h.SenderID,
		Date: opts.Now.UTC().Format("060102"), Time: opts.Now.UTC().Format("1504"),
		Version: h.Version, AckRequested: "0", Usage: usage, Standards: h.Standards,
	}}
	if NeedsTA1(ic) {
		status, note := InterchangeStatus(ic)
		out.TA1 = append(out.TA1, Seg("TA1", padControl(h.Control), h.Date, h.Time, status, note))
	}
	if ic.Err == nil {
		for _, g := range ic.Groups {
			if g.FunctionalID == "FA" {
				continue
			}
			ack := FunctionalAck(g, opts.Delimiters)
			version := g.Version
			if Uses999(g.Version) {
				version = ImplRef999
			}
			out.Groups = append(out.Groups, &Group{FunctionalID: "FA", AppSender: c(g.AppReceiver), AppReceiver: c(g.AppSender),
				Date: opts.Now.UTC().Format("20060102"), Time: opts.Now.UTC().Format("1504"), Agency: "X",
				Version: c(version), Sets: []*Set{ack}})
		}
	}
	if len(out.TA1) == 0 && len(out.Groups) == 0 {
		return nil
	}
	return out
}
