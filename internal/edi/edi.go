// Package edi maps X12 transaction sets (read and written by internal/x12) to and from
// the canonical model: inbound 850 → Order; outbound 855 ← OrderAck, 856 ← Shipment,
// 810 ← Invoice, 846 ← inventory levels. 004010 and 005010 use the same segments here.
//
// Inbound mapping errors are x12.SegmentError values naming the segment and element,
// so Apply can add them to the set's verdict and x12.FunctionalAck reports them in
// AK3/AK4 (IK3/IK4) like the reader's own syntax errors.
package edi

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/x12"
)

// AK304 / IK304 segment codes used by the mapping, beyond those of internal/x12.
const (
	SegMandatoryMissing = "3" // a mandatory segment is missing
)

// AK403 / IK403 element codes used by the mapping, beyond those of internal/x12.
const (
	ElemConditionalMissing = "2" // conditional required element missing
)

// errs collects mapping errors, one SegmentError per segment with its elements.
type errs struct{ list []x12.SegmentError }

// elem reports element pos of seg; mandatory errors make the set rejected.
func (e *errs) elem(seg x12.Segment, pos int, ref, code string, mandatory bool, format string, args ...any) {
	reason := fmt.Sprintf("%s%02d: %s", seg.ID, pos, fmt.Sprintf(format, args...))
	el := x12.ElementError{Pos: pos, Ref: ref, Code: code, Data: seg.Element(pos).Value(), Mandatory: mandatory, Reason: reason}
	for i := range e.list {
		if e.list[i].SetPos == seg.SetPos && e.list[i].ID == seg.ID {
			e.list[i].Elements = append(e.list[i].Elements, el)
			return
		}
	}
	e.list = append(e.list, x12.SegmentError{ID: seg.ID, SetPos: seg.SetPos, FilePos: seg.FilePos, Loop: loopOf(seg.ID),
		Code: x12.SegHasElementErrors, Reason: reason, Elements: []x12.ElementError{el}})
}

// missing reports a mandatory segment absent from the set; at is the segment where it
// was expected (the SE position when the set ended without it).
func (e *errs) missing(id string, at int, reason string) {
	e.list = append(e.list, x12.SegmentError{ID: id, SetPos: at, Code: SegMandatoryMissing, Reason: reason})
}

func loopOf(id string) string {
	switch id {
	case "PO1", "N1":
		return id
	}
	return ""
}

// Apply adds mapping errors to the verdict of set s of group g, as the reader does for
// syntax errors: a set with a mandatory element or segment in error becomes rejected
// (AK5 R, code 5), one with only optional ones accepted with errors (E). The group's
// counts and its Results entry for s are updated, so x12.FunctionalAck then reports
// the errors. Call it from Handler.Set (before GroupEnd), with the set's own group.
func Apply(g *x12.Group, s *x12.Set, list []x12.SegmentError) {
	if len(list) == 0 {
		return
	}
	r := &s.Result
	before := r.Status
	r.Errors = append(r.Errors, list...)
	reject := false
	for _, e := range list {
		reject = reject || e.Code != x12.SegHasElementErrors
		for _, el := range e.Elements {
			reject = reject || el.Mandatory
		}
	}
	switch {
	case reject && r.Status != x12.StatusRejected:
		r.Status = x12.StatusRejected
		r.Codes = append(r.Codes, x12.SetSegmentsInError)
	case r.Status == x12.StatusAccepted:
		r.Status = x12.StatusWithErrors
	}
	if r.BusinessUnit == "" && s.ID == "850" {
		for _, seg := range s.Segments {
			if seg.ID == "BEG" && seg.Element(3).Value() != "" {
				r.BusinessUnit, r.BusinessRef = "BEG03", seg.Element(3).Value()
				break
			}
		}
	}
	if g == nil {
		return
	}
	accepted := func(st string) bool { return st == x12.StatusAccepted || st == x12.StatusWithErrors }
	if accepted(before) && !accepted(r.Status) {
		g.AcceptedSets--
	}
	if before == x12.StatusWithErrors && r.Status != x12.StatusWithErrors {
		g.WithErrors--
	}
	if before != x12.StatusWithErrors && r.Status == x12.StatusWithErrors {
		g.WithErrors++
	}
	for i := len(g.Results) - 1; i >= 0; i-- {
		if g.Results[i].Control == s.Control && g.Results[i].FilePos == r.FilePos {
			g.Results[i] = *r
			break
		}
	}
}

// date reads a CCYYMMDD date (and an optional HHMM[SS] time) as UTC.
func date(d, t string) (*timestamppb.Timestamp, bool) {
	if len(d) != 8 {
		return nil, false
	}
	layout, v := "20060102", d
	switch len(t) {
	case 4:
		layout, v = layout+"1504", d+t
	case 6:
		layout, v = layout+"150405", d+t
	}
	tm, err := time.Parse(layout, v)
	ts := timestamppb.New(tm)
	if err != nil || ts.CheckValid() != nil { // year 0000 parses but is no Timestamp
		return nil, false
	}
	return ts, true
}

// ymd formats a timestamp as CCYYMMDD in UTC, "" for nil.
func ymd(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format("20060102")
}

// decimal normalises an X12 R value (".5", "12.", "-3") to the canonical decimal
// string; ok is false when v is not a number.
func decimal(v string) (string, bool) {
	neg := strings.HasPrefix(v, "-")
	v = strings.TrimPrefix(v, "-")
	intPart, frac, hasDot := strings.Cut(v, ".")
	if strings.Contains(frac, ".") || intPart == "" && frac == "" {
		return "", false
	}
	for _, c := range intPart + frac {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if hasDot && frac != "" {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out, true
}

// cents turns a decimal string into whole cents (X12 N2, as in TDS01): "108.25" →
// "10825". More than two decimals that are not zeros are refused, not rounded.
func cents(v string) (string, error) {
	neg := strings.HasPrefix(v, "-")
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(v, "-"), ".")
	frac = strings.TrimRight(frac, "0")
	if len(frac) > 2 {
		return "", fmt.Errorf("%q has more than two decimals: round it before invoicing", v)
	}
	frac += strings.Repeat("0", 2-len(frac))
	n, err := strconv.ParseUint(intPart+frac, 10, 63)
	if err != nil || intPart == "" {
		return "", fmt.Errorf("%q is not a decimal amount", v)
	}
	s := strconv.FormatUint(n, 10)
	if neg && n != 0 {
		s = "-" + s
	}
	return s, nil
}
