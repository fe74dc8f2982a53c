package x12

import (
	"fmt"
	"strconv"
	"strings"
)

// AckReport is what a received 997 or 999 says about one of our groups.
type AckReport struct {
	Kind         string // 997 or 999
	FunctionalID string // AK101: GS01 of our group
	GroupControl string // AK102: GS06 of our group
	Version      string // AK103 (999 only)
	Status       string // AK901: A, E, P, R...
	Included     int    // AK902
	Received     int    // AK903
	Accepted     int    // AK904
	GroupCodes   []string
	Sets         []SetAck
}

// SetAck is what a received 997 or 999 says about one of our sets.
type SetAck struct {
	ID      string // AK201
	Control string // AK202
	ImplRef string // AK203
	Status  string // AK501 / IK501
	Codes   []string
	Errors  []SegmentError
}

// Accepted reports whether the partner accepted the set (A or E).
func (s SetAck) Accepted() bool { return s.Status == StatusAccepted || s.Status == StatusWithErrors }

// ParseFunctionalAck reads a received 997 or 999 set. Errors wrap ErrBadAck.
func ParseFunctionalAck(s *Set) (*AckReport, error) {
	if s.ID != "997" && s.ID != "999" {
		return nil, fmt.Errorf("x12: set %s %s is not a 997 or 999: %w", s.ID, s.Control, ErrBadAck)
	}
	rep := &AckReport{Kind: s.ID}
	bad := func(seg Segment, reason string) error {
		return fmt.Errorf("x12: %s %s, segment %s at position %d: %s: %w", s.ID, s.Control, seg.ID, seg.SetPos, reason, ErrBadAck)
	}
	var cur *SetAck
	var curSeg *SegmentError
	seenAK1, seenAK9 := false, false
	for _, seg := range s.Segments {
		switch seg.ID {
		case "AK1":
			if seenAK1 {
				return nil, bad(seg, "second AK1")
			}
			seenAK1 = true
			rep.FunctionalID, rep.GroupControl, rep.Version = seg.Element(1).Value(), seg.Element(2).Value(), seg.Element(3).Value()
			if rep.GroupControl == "" {
				return nil, bad(seg, "AK102 group control number missing")
			}
		case "AK2":
			if !seenAK1 || cur != nil {
				return nil, bad(seg, "AK2 before AK1 or before the previous set's AK5/IK5")
			}
			cur = &SetAck{ID: seg.Element(1).Value(), Control: seg.Element(2).Value(), ImplRef: seg.Element(3).Value()}
			curSeg = nil
		case "AK3", "IK3":
			if cur == nil {
				return nil, bad(seg, seg.ID+" outside an AK2 loop")
			}
			pos, _ := strconv.Atoi(seg.Element(2).Value())
			cur.Errors = append(cur.Errors, SegmentError{ID: seg.Element(1).Value(), SetPos: pos,
				Loop: seg.Element(3).Value(), Code: seg.Element(4).Value()})
			curSeg = &cur.Errors[len(cur.Errors)-1]
		case "AK4", "IK4":
			if curSeg == nil {
				return nil, bad(seg, seg.ID+" without an AK3/IK3")
			}
			e := seg.Element(1)
			p, _ := strconv.Atoi(e.Component(1))
			c, _ := strconv.Atoi(e.Component(2))
			r, _ := strconv.Atoi(e.Component(3))
			curSeg.Elements = append(curSeg.Elements, ElementError{Pos: p, Component: c, Rep: r,
				Ref: seg.Element(2).Value(), Code: seg.Element(3).Value(), Data: seg.Element(4).String()})
		case "CTX":
			// Context of the error; the report keeps the positions, not the context.
		case "AK5", "IK5":
			if cur == nil {
				return nil, bad(seg, seg.ID+" outside an AK2 loop")
			}
			cur.Status = seg.Element(1).Value()
			for i := 2; i <= len(seg.Elements); i++ {
				if v := seg.Element(i).Value(); v != "" {
					cur.Codes = append(cur.Codes, v)
				}
			}
			rep.Sets = append(rep.Sets, *cur)
			cur, curSeg = nil, nil
		case "AK9":
			if !seenAK1 || cur != nil {
				return nil, bad(seg, "AK9 before AK1 or inside an AK2 loop")
			}
			seenAK9 = true
			rep.Status = seg.Element(1).Value()
			var err error
			if rep.Included, err = strconv.Atoi(seg.Element(2).Value()); err != nil {
				return nil, bad(seg, "AK902 is not a number")
			}
			rep.Received, _ = strconv.Atoi(seg.Element(3).Value())
			rep.Accepted, _ = strconv.Atoi(seg.Element(4).Value())
			for i := 5; i <= len(seg.Elements); i++ {
				if v := seg.Element(i).Value(); v != "" {
					rep.GroupCodes = append(rep.GroupCodes, v)
				}
			}
		default:
			return nil, bad(seg, "unexpected segment in a functional acknowledgement")
		}
	}
	if !seenAK1 || !seenAK9 || cur != nil {
		return nil, fmt.Errorf("x12: %s %s lacks AK1, AK9 or a set's AK5/IK5: %w", s.ID, s.Control, ErrBadAck)
	}
	switch rep.Status {
	case StatusAccepted, StatusWithErrors, StatusPartial, StatusRejected, "M", "W", "X":
	default:
		return nil, fmt.Errorf("x12: %s %s: AK901 %q is not a known status: %w", s.ID, s.Control, rep.Status, ErrBadAck)
	}
	return rep, nil
}

// SetStatus returns what the report says about our set with control number control;
// ok is false when the report does not name it. When a group is acknowledged without
// AK2 loops (allowed when every set was accepted), every set takes the group status.
func (r *AckReport) SetStatus(control string) (status string, ok bool) {
	for _, s := range r.Sets {
		if sameNumber(s.Control, control) {
			return s.Status, true
		}
	}
	if len(r.Sets) == 0 && (r.Status == StatusAccepted || r.Status == StatusWithErrors || r.Status == StatusRejected) {
		return r.Status, true
	}
	return "", false
}

// TA1Report is what a received TA1 says about one of our interchanges.
type TA1Report struct {
	Control string // TA101: our ISA13
	Date    string
	Time    string
	Status  string // TA104: A, E or R
	Note    string // TA105
}

// ParseTA1 reads a received TA1 segment. Errors wrap ErrBadAck.
func ParseTA1(seg Segment) (TA1Report, error) {
	if seg.ID != "TA1" {
		return TA1Report{}, fmt.Errorf("x12: segment %s is not a TA1: %w", seg.ID, ErrBadAck)
	}
	r := TA1Report{Control: seg.Element(1).Value(), Date: seg.Element(2).Value(), Time: seg.Element(3).Value(),
		Status: seg.Element(4).Value(), Note: seg.Element(5).Value()}
	if r.Control == "" || !allDigits(r.Control) {
		return r, fmt.Errorf("x12: TA101 %q is not an interchange control number: %w", r.Control, ErrBadAck)
	}
	if !strings.Contains("AER", r.Status) || len(r.Status) != 1 {
		return r, fmt.Errorf("x12: TA104 %q is not A, E or R: %w", r.Status, ErrBadAck)
	}
	return r, nil
}
