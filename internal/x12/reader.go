package x12

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Handler receives what the reader finds. Any callback may be nil. A callback that
// returns an error stops the reader, which returns that error.
type Handler struct {
	// Set is called for each transaction set when its SE (or the segment that ends it
	// without one) is read. The set's Result holds its own verdict; its group and
	// interchange verdicts come later, so treat it as provisional until then.
	// The Set and its segments are not used by the reader after the call returns.
	Set func(ic *Interchange, g *Group, s *Set) error
	// GroupEnd is called at GE (or where the group ends without one).
	GroupEnd func(ic *Interchange, g *Group) error
	// InterchangeEnd is called at IEA, or when the interchange is refused and its end is known.
	InterchangeEnd func(ic *Interchange) error
}

// Reader reads X12 interchanges. The zero value is ready to use.
type Reader struct {
	// MaxSegmentLen bounds a single segment (default 1 MiB); a longer one stops the reader.
	MaxSegmentLen int
	// DiscardResults leaves Group.Results empty (the counts are still kept), so that
	// memory does not grow with the number of sets; a caller that builds the 997/999
	// then collects each Set's Result itself.
	DiscardResults bool
}

// Read reads every interchange of r, calling h as it goes, with the default Reader.
func Read(r io.Reader, h Handler) error { return Reader{}.Read(r, h) }

// ReadAll reads every interchange into memory, keeping every set in its group.
// It returns the interchanges read so far along with any error Read returns.
func ReadAll(r io.Reader) ([]*Interchange, error) {
	var out []*Interchange
	err := Read(r, Handler{
		Set: func(_ *Interchange, g *Group, s *Set) error {
			g.Sets = append(g.Sets, s)
			return nil
		},
		InterchangeEnd: func(ic *Interchange) error {
			out = append(out, ic)
			return nil
		},
	})
	return out, err
}

// Read reads every interchange of r. It returns nil when the whole input was read,
// whether interchanges were accepted or refused (the verdicts go to the handler).
// It returns an error when it had to stop early: a read error, a handler error, or an
// *EnvelopeError when the input cannot be split into interchanges (no ISA where one
// must start, an ISA that cannot be read, a segment over MaxSegmentLen).
func (rd Reader) Read(r io.Reader, h Handler) error {
	max := rd.MaxSegmentLen
	if max <= 0 {
		max = 1 << 20
	}
	s := &scanner{br: bufio.NewReaderSize(r, 64<<10), max: max, h: h, discard: rd.DiscardResults}
	return s.run()
}

type scanner struct {
	br      *bufio.Reader
	max     int
	h       Handler
	filePos int
	d       Delimiters
	buf     []byte
	discard bool
	strs    map[string]string
	// noTerminator is set when the last segment ended at EOF without a terminator.
	noTerminator bool
}

func isAlnum(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z'
}

// skipBetween skips what may separate interchanges: whitespace, DOS EOF marks (0x1A)
// and NUL padding. It reports false at EOF.
func (s *scanner) skipBetween() (bool, error) {
	for {
		b, err := s.br.ReadByte()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("x12: reading input: %w", err)
		}
		switch b {
		case ' ', '\t', '\r', '\n', 0x1a, 0:
			continue
		}
		return true, s.br.UnreadByte()
	}
}

func (s *scanner) run() error {
	for {
		more, err := s.skipBetween()
		if err != nil || !more {
			return err
		}
		head, _ := s.br.Peek(3)
		if string(head) != "ISA" {
			return &EnvelopeError{FilePos: s.filePos + 1, SegmentID: printable(head), Note: NoteBadControlStructure,
				Reason: "expected an ISA segment to start an interchange", Err: ErrNotX12}
		}
		ic, err := s.readISA()
		if err != nil {
			return err
		}
		if err := s.interchange(ic); err != nil {
			return err
		}
	}
}

func printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "\\x%02x", c)
		}
	}
	return sb.String()
}

// isaWidths are the fixed widths of ISA01..ISA15 (ISA16 is the one-byte component separator).
var isaWidths = [15]int{2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1}

// isaLen is the length of a padded ISA including ISA16 and the segment terminator.
const isaLen = 106

// readISA reads the ISA and sets the scanner's delimiters from it.
func (s *scanner) readISA() (*Interchange, error) {
	s.filePos++
	pos := s.filePos
	bad := func(note, reason string, err error) error {
		return &EnvelopeError{FilePos: pos, SegmentID: "ISA", Note: note, Reason: reason, Err: err}
	}
	peek, _ := s.br.Peek(isaLen)
	if len(peek) < 4 {
		return nil, bad(NotePrematureEnd, "input ends inside the ISA", ErrBadISA)
	}
	sep := peek[3]
	fixed := len(peek) == isaLen
	if fixed {
		off := 3
		for _, w := range isaWidths {
			if peek[off] != sep {
				fixed = false
				break
			}
			off += w + 1
		}
		fixed = fixed && peek[103] == sep
	}
	var fields []string
	var comp, term byte
	var ic = &Interchange{FilePos: pos}
	if fixed {
		fields = strings.Split(string(peek[4:103]), string([]byte{sep}))
		comp, term = peek[104], peek[105]
		if _, err := s.br.Discard(isaLen); err != nil {
			return nil, fmt.Errorf("x12: reading ISA: %w", err)
		}
	} else {
		// Not padded to the fixed widths: count element separators instead.
		var raw []byte
		n := 0
		for {
			b, err := s.br.ReadByte()
			if err != nil {
				return nil, bad(NotePrematureEnd, "input ends inside the ISA", ErrBadISA)
			}
			raw = append(raw, b)
			if len(raw) > 4*isaLen {
				return nil, bad(NoteBadControlStructure, "ISA has fewer than 16 elements", ErrBadISA)
			}
			if len(raw) >= 4 && b == sep {
				n++
				if n == 16 {
					break
				}
			}
		}
		c, err1 := s.br.ReadByte()
		t, err2 := s.br.ReadByte()
		if err1 != nil || err2 != nil {
			return nil, bad(NotePrematureEnd, "input ends inside the ISA", ErrBadISA)
		}
		comp, term = c, t
		fields = strings.Split(string(raw[4:len(raw)-1]), string([]byte{sep}))
		ic.Warnings = append(ic.Warnings, Warning{FilePos: pos,
			Message: "ISA fields are not padded to their fixed widths; read by counting element separators"})
	}
	if len(fields) != 15 {
		return nil, bad(NoteBadControlStructure, fmt.Sprintf("ISA has %d elements before ISA16, want 15", len(fields)), ErrBadISA)
	}
	switch {
	case isAlnum(term) || term == ' ' || term == 0:
		return nil, bad(NoteBadTerminator, fmt.Sprintf("segment terminator %q is a letter, digit, space or NUL", term), ErrDelimiters)
	case isAlnum(sep) || sep == ' ' || sep == 0 || isAlnum(comp) || comp == ' ' || comp == 0:
		return nil, bad(NoteBadControlStructure, fmt.Sprintf("element separator %q or component separator %q is a letter, digit, space or NUL", sep, comp), ErrDelimiters)
	case sep == comp || sep == term || comp == term:
		return nil, bad(NoteBadControlStructure, fmt.Sprintf("element separator %q, component separator %q and segment terminator %q are not all different", sep, comp, term), ErrDelimiters)
	}
	for i, f := range fields {
		if strings.IndexByte(f, term) >= 0 {
			return nil, bad(NoteBadControlStructure, fmt.Sprintf("ISA%02d %q contains the segment terminator %q", i+1, f, term), ErrBadISA)
		}
		if len(f) > isaWidths[i] {
			note := NoteBadControlStructure
			switch i {
			case 4:
				note = NoteBadSenderQual
			case 5:
				note = NoteBadSenderID
			case 6:
				note = NoteBadReceiverQual
			case 7:
				note = NoteBadReceiverID
			}
			return nil, bad(note, fmt.Sprintf("ISA%02d %q is longer than its width %d", i+1, f, isaWidths[i]), ErrBadISA)
		}
	}
	t := func(i int) string { return strings.TrimSpace(fields[i-1]) }
	ic.Header = Header{
		AuthQual: t(1), Auth: t(2), SecurityQual: t(3), Security: t(4),
		SenderQual: t(5), SenderID: t(6), ReceiverQual: t(7), ReceiverID: t(8),
		Date: t(9), Time: t(10), Standards: fields[10], Version: t(12), Control: t(13),
		AckRequested: t(14), Usage: t(15),
	}
	hd := &ic.Header
	if !allDigits(hd.Version) || len(hd.Version) != 5 {
		return nil, bad(NoteBadVersion, fmt.Sprintf("ISA12 version %q is not 5 digits", hd.Version), ErrBadISA)
	}
	if !allDigits(hd.Control) || hd.Control == "" {
		return nil, bad(NoteBadControlNumber, fmt.Sprintf("ISA13 control number %q is not numeric", hd.Control), ErrBadISA)
	}
	if hd.AckRequested != "0" && hd.AckRequested != "1" {
		ic.Noted = append(ic.Noted, &EnvelopeError{FilePos: pos, SegmentID: "ISA", Note: NoteBadAckRequested,
			Reason: fmt.Sprintf("ISA14 %q is neither 0 nor 1", hd.AckRequested), Err: ErrBadISA})
	}
	if hd.Usage != "P" && hd.Usage != "T" {
		ic.Noted = append(ic.Noted, &EnvelopeError{FilePos: pos, SegmentID: "ISA", Note: NoteBadUsage,
			Reason: fmt.Sprintf("ISA15 %q is neither P nor T", hd.Usage), Err: ErrBadISA})
	}
	rep := byte(0)
	if hd.Version >= "00402" && len(fields[10]) == 1 {
		r := fields[10][0]
		switch {
		case isAlnum(r) || r == ' ' || r == 0:
			ic.Warnings = append(ic.Warnings, Warning{FilePos: pos,
				Message: fmt.Sprintf("ISA11 %q is a letter, digit, space or NUL: not used as a repetition separator", r)})
		case r == sep || r == comp || r == term:
			ic.Warnings = append(ic.Warnings, Warning{FilePos: pos,
				Message: fmt.Sprintf("ISA11 %q equals another delimiter: not used as a repetition separator", r)})
		default:
			rep = r
		}
	}
	s.d = Delimiters{Element: sep, Component: comp, Repetition: rep, Segment: term}
	ic.Delimiters = s.d
	return ic, nil
}

func allDigits(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// sameNumber compares control numbers as numbers when both are numeric (000000001 == 1).
func sameNumber(a, b string) bool {
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if allDigits(a) && allDigits(b) && a != "" && b != "" {
		return strings.TrimLeft(a, "0") == strings.TrimLeft(b, "0")
	}
	return a == b
}

// errNewISA is returned by next when an ISA starts before the current interchange ended.
var errNewISA = errors.New("new ISA")

// next reads the next segment of the current interchange. It returns io.EOF at the end
// of input and errNewISA (without consuming it) when another interchange begins.
func (s *scanner) next() (Segment, error) {
	for {
		b, err := s.br.ReadByte()
		if err == io.EOF {
			return Segment{}, io.EOF
		}
		if err != nil {
			return Segment{}, fmt.Errorf("x12: reading input: %w", err)
		}
		if b != '\r' && b != '\n' && b != 0x1a {
			_ = s.br.UnreadByte()
			break
		}
	}
	if head, _ := s.br.Peek(4); len(head) == 4 && string(head[:3]) == "ISA" && !isAlnum(head[3]) {
		return Segment{}, errNewISA
	}
	s.buf = s.buf[:0]
	for {
		chunk, err := s.br.ReadSlice(s.d.Segment)
		s.buf = append(s.buf, chunk...)
		if len(s.buf) > s.max {
			return Segment{}, &EnvelopeError{FilePos: s.filePos + 1, Note: NoteBadControlStructure,
				Reason: fmt.Sprintf("segment longer than %d bytes (is the segment terminator %q right?)", s.max, s.d.Segment), Err: ErrSegmentTooLong}
		}
		if err == nil {
			s.buf = s.buf[:len(s.buf)-1]
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(bytes.Trim(s.buf, " \t\r\n\x1a\x00")) == 0 {
				return Segment{}, io.EOF
			}
			s.noTerminator = true
			break
		}
		return Segment{}, fmt.Errorf("x12: reading input: %w", err)
	}
	line := s.buf
	if s.d.Segment == '\n' && len(line) > 0 && line[len(line)-1] == '\r' && s.d.Element != '\r' {
		line = line[:len(line)-1]
	}
	if s.noTerminator {
		line = bytes.TrimRight(line, " \t\r\n\x1a\x00")
	}
	s.filePos++
	return s.split(string(line)), nil
}

func (s *scanner) split(line string) Segment {
	n := strings.Count(line, string([]byte{s.d.Element}))
	seg := Segment{FilePos: s.filePos}
	if n > 0 {
		seg.Elements = make([]Element, 0, n)
	}
	i := strings.IndexByte(line, s.d.Element)
	if i < 0 {
		seg.ID = line
		return seg
	}
	seg.ID = line[:i]
	rest := line[i+1:]
	for {
		j := strings.IndexByte(rest, s.d.Element)
		if j < 0 {
			seg.Elements = append(seg.Elements, Element{raw: rest, comp: s.d.Component, rep: s.d.Repetition})
			break
		}
		seg.Elements = append(seg.Elements, Element{raw: rest[:j], comp: s.d.Component, rep: s.d.Repetition})
		rest = rest[j+1:]
	}
	return seg
}

func validSegmentID(id string) bool {
	if len(id) < 2 || len(id) > 3 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// interchange reads one interchange after its ISA, up to its IEA or its premature end.
func (s *scanner) interchange(ic *Interchange) error {
	var (
		g   *Group
		set *setBuilder
	)
	refuse := func(seg Segment, note, reason string, err error) {
		if ic.Err == nil {
			ic.Err = &EnvelopeError{FilePos: seg.FilePos, SegmentID: printable([]byte(seg.ID)), Note: note, Reason: reason, Err: err}
		}
	}
	endSet := func(se *Segment, code string) error {
		r := set.finish(se, code)
		set.set.Result = r
		s.noteResult(g, r)
		cur := set.set
		set = nil
		if s.h.Set != nil {
			if err := s.h.Set(ic, g, cur); err != nil {
				return err
			}
		}
		return nil
	}
	endGroup := func(ge *Segment, at Segment) error {
		if ge == nil {
			id := printable([]byte(at.ID))
			g.Err = &GroupError{FilePos: at.FilePos, SegmentID: id, Code: GroupTrailerMissing,
				Reason: fmt.Sprintf("group %s has no GE before %s", g.Control, id), Err: ErrTruncated}
		} else {
			n, err := strconv.Atoi(ge.Element(1).Value())
			g.Included = n
			switch {
			case err != nil || n != g.Received:
				g.Err = &GroupError{FilePos: ge.FilePos, SegmentID: "GE", Code: GroupCountMismatch,
					Reason: fmt.Sprintf("GE01 %q but the group has %d sets", ge.Element(1).String(), g.Received), Err: ErrCount}
			case !sameNumber(ge.Element(2).Value(), g.Control):
				g.Err = &GroupError{FilePos: ge.FilePos, SegmentID: "GE", Code: GroupControlMismatch,
					Reason: fmt.Sprintf("GE02 %q does not match GS06 %q", ge.Element(2).String(), g.Control), Err: ErrControlNumber}
			}
		}
		ic.Groups = append(ic.Groups, g)
		cur := g
		g = nil
		if s.h.GroupEnd != nil {
			return s.h.GroupEnd(ic, cur)
		}
		return nil
	}
	endInterchange := func() error {
		if s.noTerminator {
			ic.Warnings = append(ic.Warnings, Warning{FilePos: s.filePos, Message: "last segment has no segment terminator"})
			s.noTerminator = false
		}
		if s.h.InterchangeEnd != nil {
			return s.h.InterchangeEnd(ic)
		}
		return nil
	}
	// closeOpen ends whatever set and group are open because seg ended them early.
	closeOpen := func(seg Segment) error {
		if set != nil {
			if err := endSet(nil, SetTrailerMissing); err != nil {
				return err
			}
		}
		if g != nil {
			return endGroup(nil, seg)
		}
		return nil
	}
	for {
		seg, err := s.next()
		if err == io.EOF || err == errNewISA {
			at := Segment{FilePos: s.filePos, ID: "EOF"}
			reason := "input ends before the IEA"
			if err == errNewISA {
				at = Segment{FilePos: s.filePos + 1, ID: "ISA"}
				reason = "a new ISA begins before the IEA"
			}
			if err := closeOpen(at); err != nil {
				return err
			}
			refuse(at, NotePrematureEnd, reason, ErrTruncated)
			return endInterchange()
		}
		if err != nil {
			return err
		}
		if seg.ID == "" && len(seg.Elements) == 0 {
			ic.Warnings = append(ic.Warnings, Warning{FilePos: seg.FilePos, Message: "empty segment skipped"})
			s.filePos--
			continue
		}
		switch {
		case set != nil && seg.ID != "SE" && seg.ID != "ST" && seg.ID != "GE" && seg.ID != "IEA" && seg.ID != "GS":
			set.add(seg)
		case seg.ID == "SE":
			if set == nil {
				refuse(seg, NoteBadContent, "SE without ST", ErrStructure)
				continue
			}
			if err := endSet(&seg, ""); err != nil {
				return err
			}
		case seg.ID == "ST":
			if g == nil {
				refuse(seg, NoteBadContent, "ST outside a functional group", ErrStructure)
				continue
			}
			if set != nil {
				if err := endSet(nil, SetTrailerMissing); err != nil {
					return err
				}
			}
			set = newSetBuilder(ic, g, seg)
		case seg.ID == "GS":
			if set != nil || g != nil {
				if err := closeOpen(seg); err != nil {
					return err
				}
			}
			g = &Group{FunctionalID: seg.Element(1).Value(), AppSender: seg.Element(2).Value(),
				AppReceiver: seg.Element(3).Value(), Date: seg.Element(4).Value(), Time: seg.Element(5).Value(),
				Control: seg.Element(6).Value(), Agency: seg.Element(7).Value(), Version: seg.Element(8).Value(),
				FilePos: seg.FilePos}
			switch {
			case len(seg.Elements) < 8 || g.FunctionalID == "" || g.Version == "":
				refuse(seg, NoteBadContent, fmt.Sprintf("GS has %d elements, want 8 with GS01 and GS08 present", len(seg.Elements)), ErrStructure)
			case !allDigits(g.Control) || g.Control == "" || len(g.Control) > 9:
				g.Err = &GroupError{FilePos: seg.FilePos, SegmentID: "GS", Code: GroupControlBadSyntax,
					Reason: fmt.Sprintf("GS06 %q is not a number of 1 to 9 digits", g.Control), Err: ErrStructure}
			}
			g.FunctionalID, g.Version = strings.Clone(g.FunctionalID), strings.Clone(g.Version)
			g.Control, g.AppSender, g.AppReceiver = strings.Clone(g.Control), strings.Clone(g.AppSender), strings.Clone(g.AppReceiver)
			g.Date, g.Time, g.Agency = strings.Clone(g.Date), strings.Clone(g.Time), strings.Clone(g.Agency)
		case seg.ID == "GE":
			if g == nil {
				refuse(seg, NoteBadContent, "GE without GS", ErrStructure)
				continue
			}
			if set != nil {
				if err := endSet(nil, SetTrailerMissing); err != nil {
					return err
				}
			}
			if err := endGroup(&seg, seg); err != nil {
				return err
			}
		case seg.ID == "IEA":
			if err := closeOpen(seg); err != nil {
				return err
			}
			n, err := strconv.Atoi(seg.Element(1).Value())
			ic.Included = n
			switch {
			case err != nil || n != len(ic.Groups):
				refuse(seg, NoteBadGroupCount, fmt.Sprintf("IEA01 %q but the interchange has %d groups", seg.Element(1).String(), len(ic.Groups)), ErrCount)
			case !sameNumber(seg.Element(2).Value(), ic.Header.Control):
				refuse(seg, NoteControlMismatch, fmt.Sprintf("IEA02 %q does not match ISA13 %q", seg.Element(2).String(), ic.Header.Control), ErrControlNumber)
			}
			return endInterchange()
		case seg.ID == "TA1" && g == nil:
			ic.TA1 = append(ic.TA1, cloneSegment(seg))
		default:
			refuse(seg, NoteBadContent, fmt.Sprintf("segment %q outside a transaction set", printable([]byte(seg.ID))), ErrStructure)
		}
	}
}

// intern returns a copy of v that shares memory with earlier equal values, for the few
// distinct set IDs and implementation references of a file.
func (s *scanner) intern(v string) string {
	if v == "" {
		return ""
	}
	if c, ok := s.strs[v]; ok {
		return c
	}
	c := strings.Clone(v)
	if len(s.strs) < 256 {
		if s.strs == nil {
			s.strs = map[string]string{}
		}
		s.strs[c] = c
	}
	return c
}

// noteResult counts the set's verdict in its group and, unless results are discarded,
// keeps it without pinning the set's memory.
func (s *scanner) noteResult(g *Group, r SetResult) {
	g.Received++
	switch r.Status {
	case StatusAccepted:
		g.AcceptedSets++
	case StatusWithErrors:
		g.AcceptedSets++
		g.WithErrors++
	}
	if s.discard {
		return
	}
	g.Results = append(g.Results, r)
	r = g.Results[len(g.Results)-1]
	r.ID, r.Control, r.ImplRef = s.intern(r.ID), strings.Clone(r.Control), s.intern(r.ImplRef)
	r.BusinessRef = strings.Clone(r.BusinessRef)
	for i := range r.Errors {
		e := &r.Errors[i]
		e.ID = strings.Clone(e.ID)
		for j := range e.Elements {
			e.Elements[j].Data = strings.Clone(e.Elements[j].Data)
		}
	}
	g.Results[len(g.Results)-1] = r
}

func cloneSegment(seg Segment) Segment {
	out := seg
	out.ID = strings.Clone(seg.ID)
	out.Elements = make([]Element, len(seg.Elements))
	for i, e := range seg.Elements {
		e.raw = strings.Clone(e.raw)
		out.Elements[i] = e
	}
	return out
}

type setBuilder struct {
	set   *Set
	count int // segments so far, ST included
	st    Segment
	codes []string
	errs  []SegmentError
}

func newSetBuilder(ic *Interchange, g *Group, st Segment) *setBuilder {
	h := ic.Header
	b := &setBuilder{st: st, count: 1}
	st.SetPos = 1
	b.set = &Set{ID: st.Element(1).Value(), Control: st.Element(2).Value(), ImplRef: st.Element(3).Value(),
		Envelope: Envelope{SenderQual: h.SenderQual, SenderID: h.SenderID, ReceiverQual: h.ReceiverQual,
			ReceiverID: h.ReceiverID, InterchangeControl: h.Control, Usage: h.Usage,
			FunctionalID: g.FunctionalID, AppSender: g.AppSender, AppReceiver: g.AppReceiver,
			GroupControl: g.Control, Version: g.Version}}
	if len(b.set.ID) != 3 || !allDigits(b.set.ID) {
		b.codes = append(b.codes, SetBadID)
	}
	if len(b.set.Control) < 4 || len(b.set.Control) > 9 {
		b.codes = append(b.codes, SetBadControl)
	}
	b.check(st)
	return b
}

func (b *setBuilder) add(seg Segment) {
	b.count++
	seg.SetPos = b.count
	if !validSegmentID(seg.ID) {
		b.errs = append(b.errs, SegmentError{ID: printable([]byte(seg.ID)), SetPos: seg.SetPos, FilePos: seg.FilePos,
			Code: SegUnrecognizedID, Reason: "segment ID is not 2 or 3 upper-case letters or digits"})
	} else {
		b.check(seg)
	}
	b.set.Segments = append(b.set.Segments, seg)
}

func (b *setBuilder) check(seg Segment) {
	if errs := validateSegment(b.set.ID, b.set.Envelope.Version, seg); len(errs) > 0 {
		b.errs = append(b.errs, SegmentError{ID: seg.ID, SetPos: seg.SetPos, FilePos: seg.FilePos,
			Loop: loopOf(b.set.ID, seg.ID), Code: SegHasElementErrors, Reason: errs[0].Reason, Elements: errs})
	}
}

// finish closes the set at its SE (se nil when the set ended without one, with code).
func (b *setBuilder) finish(se *Segment, code string) SetResult {
	if code != "" {
		b.codes = append(b.codes, code)
	}
	if se != nil {
		b.count++
		se.SetPos = b.count
		b.check(*se)
		n, err := strconv.Atoi(se.Element(1).Value())
		if err == nil && n != b.count {
			b.codes = append(b.codes, SetCountMismatch)
		} else if err != nil && se.Element(1).Value() != "" {
			b.codes = append(b.codes, SetCountMismatch)
		}
		if se.Element(2).Value() != b.set.Control {
			b.codes = append(b.codes, SetControlMismatch)
		}
	}
	r := SetResult{ID: b.set.ID, Control: b.set.Control, ImplRef: b.set.ImplRef, FilePos: b.st.FilePos,
		Errors: b.errs, Codes: b.codes, Status: StatusAccepted}
	mandatory := false
	for _, e := range b.errs {
		if e.Code != SegHasElementErrors {
			mandatory = true
		}
		for _, el := range e.Elements {
			mandatory = mandatory || el.Mandatory
		}
	}
	switch {
	case len(b.codes) > 0:
		r.Status = StatusRejected
		if len(b.errs) > 0 && mandatory {
			r.Codes = append(r.Codes, SetSegmentsInError)
		}
	case mandatory:
		r.Status = StatusRejected
		r.Codes = append(r.Codes, SetSegmentsInError)
	case len(b.errs) > 0:
		r.Status = StatusWithErrors
	}
	if len(b.errs) > 0 {
		r.BusinessUnit, r.BusinessRef = businessUnit(b.set)
	}
	return r
}
