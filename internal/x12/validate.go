package x12

import (
	"fmt"
	"strings"
)

// elementRule is one element of a validated segment, from the X12 dictionaries.
type elementRule struct {
	pos       int
	ref       string // data element reference number
	mandatory bool
	typ       byte // 'A' AN, 'I' ID, 'N' N0, 'R' decimal, 'D' date CCYYMMDD
	min, max  int
}

// segmentRules is the small table of segments the reader validates element by element.
// ST and SE apply to every set; BEG and PO1 to the 850. Elements not listed are not
// checked. PO102 is conditional in 004010 and 005010, so PO1 has no mandatory element
// here: a PO1 error gives AK5 E (accepted with errors), a BEG or ST/SE error AK5 R.
var segmentRules = map[string][]elementRule{
	"ST": {
		{1, "143", true, 'I', 3, 3},
		{2, "329", true, 'A', 4, 9},
		{3, "1705", false, 'A', 1, 35},
	},
	"SE": {
		{1, "96", true, 'N', 1, 10},
		{2, "329", true, 'A', 4, 9},
	},
}

// setRules are the segments validated only inside one transaction set type.
var setRules = map[string]map[string][]elementRule{
	"850": {
		"BEG": {
			{1, "353", true, 'I', 2, 2},
			{2, "92", true, 'I', 2, 2},
			{3, "324", true, 'A', 1, 22},
			{4, "328", false, 'A', 1, 30},
			{5, "373", true, 'D', 8, 8},
		},
		"PO1": po1Rules(),
	},
}

func po1Rules() []elementRule {
	rules := []elementRule{
		{1, "350", false, 'A', 1, 20},
		{2, "330", false, 'R', 1, 15},
		{3, "355", false, 'I', 2, 2},
		{4, "212", false, 'R', 1, 17},
		{5, "639", false, 'I', 2, 2},
	}
	for p := 6; p <= 24; p += 2 {
		rules = append(rules, elementRule{p, "235", false, 'I', 2, 2}, elementRule{p + 1, "234", false, 'A', 1, 48})
	}
	return rules
}

// validateSegment checks seg against the table for set setID.
func validateSegment(setID, version string, seg Segment) []ElementError {
	rules, ok := segmentRules[seg.ID]
	if !ok {
		rules, ok = setRules[setID][seg.ID]
	}
	if !ok {
		return nil
	}
	_ = version // the table is the same for 004010 and 005010
	var errs []ElementError
	for _, r := range rules {
		if r.pos == 3 && seg.ID == "ST" && !strings.HasPrefix(version, "005") {
			continue // ST03 exists from 005010 on
		}
		v := seg.Element(r.pos).Value()
		code, reason := checkElement(r, v)
		if code != "" {
			errs = append(errs, ElementError{Pos: r.pos, Ref: r.ref, Code: code, Data: v, Mandatory: r.mandatory,
				Reason: fmt.Sprintf("%s%02d: %s", seg.ID, r.pos, reason)})
		}
	}
	return errs
}

// checkElement returns the AK403 code and reason when v breaks rule r, or "".
func checkElement(r elementRule, v string) (code, reason string) {
	if v == "" {
		if r.mandatory {
			return ElemMandatoryMissing, "mandatory element missing"
		}
		return "", ""
	}
	n := len(v)
	if r.typ == 'R' || r.typ == 'N' {
		n = len(strings.TrimLeft(strings.ReplaceAll(v, ".", ""), "-"))
	}
	switch {
	case n > r.max:
		return ElemTooLong, fmt.Sprintf("%q is longer than %d", v, r.max)
	case n < r.min:
		return ElemTooShort, fmt.Sprintf("%q is shorter than %d", v, r.min)
	}
	switch {
	case r.typ == 'N' && !allDigits(strings.TrimPrefix(v, "-")):
		return ElemInvalidChar, fmt.Sprintf("%q is not a whole number", v)
	case r.typ == 'R' && !isDecimal(v):
		return ElemInvalidChar, fmt.Sprintf("%q is not a decimal number", v)
	case r.typ == 'D' && !isDate(v):
		return ElemInvalidDate, fmt.Sprintf("%q is not a date CCYYMMDD", v)
	}
	return "", ""
}

func isDecimal(v string) bool {
	v = strings.TrimPrefix(v, "-")
	dots := 0
	digits := 0
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '.':
			dots++
		case v[i] >= '0' && v[i] <= '9':
			digits++
		default:
			return false
		}
	}
	return dots <= 1 && digits > 0
}

func isDate(v string) bool {
	if len(v) != 8 || !allDigits(v) {
		return false
	}
	m := (v[4]-'0')*10 + v[5] - '0'
	d := (v[6]-'0')*10 + v[7] - '0'
	return m >= 1 && m <= 12 && d >= 1 && d <= 31
}

// loopOf names the loop a segment starts, when known (AK303 / IK303).
func loopOf(setID, segID string) string {
	if setID == "850" && segID == "PO1" {
		return "PO1"
	}
	return ""
}

// businessUnit names the element that identifies the business document of a set, for
// the 999 CTX business unit identifier: BEG03 (the PO number) for an 850.
func businessUnit(s *Set) (string, string) {
	if s.ID != "850" {
		return "", ""
	}
	for _, seg := range s.Segments {
		if seg.ID == "BEG" {
			if v := seg.Element(3).Value(); v != "" {
				return "BEG03", v
			}
			break
		}
	}
	return "", ""
}
