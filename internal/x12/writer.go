package x12

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
)

// Level is the envelope level a control number is for.
type Level int

const (
	LevelInterchange Level = iota // ISA13 / IEA02, 9 digits
	LevelGroup                    // GS06 / GE02, 1 to 9 digits
	LevelSet                      // ST02 / SE02, 4 to 9 characters
)

// ControlNumbers hands out control numbers. An implementation for a trading partner
// must never hand out the same number twice, also across restarts.
type ControlNumbers interface {
	Next(level Level) (uint64, error)
}

// Sequence is an in-memory ControlNumbers counting from 1 at each level. It forgets
// everything on restart: for tests and one-off files only.
type Sequence struct {
	mu   sync.Mutex
	next [3]uint64
}

// Next returns the next number at level.
func (s *Sequence) Next(level Level) (uint64, error) {
	if level < LevelInterchange || level > LevelSet {
		return 0, fmt.Errorf("x12: control number level %d is not interchange, group or set", level)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next[level]++
	return s.next[level], nil
}

// Writer writes interchanges with fixed delimiters.
type Writer struct {
	w *bufio.Writer
	d Delimiters
	// Numbers, when set, assigns ISA13, GS06 and ST02 to everything written (and the
	// numbers are stored back in the structures so the caller knows what was sent);
	// when nil the control numbers already in the structures are written.
	Numbers ControlNumbers
}

// NewWriter returns a Writer of w with delimiters d.
func NewWriter(w io.Writer, d Delimiters, numbers ControlNumbers) *Writer {
	return &Writer{w: bufio.NewWriter(w), d: d, Numbers: numbers}
}

// WriteError is a value that cannot be written.
type WriteError struct {
	Where  string // e.g. ISA06, BEG03, set 850 segment 4
	Reason string
	Err    error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("x12: cannot write %s: %s: %v", e.Where, e.Reason, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// Write writes one interchange: ISA, its TA1 segments, its groups and sets, with the
// counts computed, and flushes. Header fields are written as given (padded), except
// ISA11, which is the repetition separator from 00402 on, and ISA12, which defaults
// to 00401 when empty.
func (w *Writer) Write(ic *Interchange) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.Numbers != nil {
		n, err := w.Numbers.Next(LevelInterchange)
		if err != nil {
			return fmt.Errorf("x12: getting an interchange control number: %w", err)
		}
		ic.Header.Control = fmt.Sprintf("%09d", n)
	}
	if err := w.writeISA(ic.Header); err != nil {
		return err
	}
	for _, ta1 := range ic.TA1 {
		if err := w.segment(ta1); err != nil {
			return err
		}
	}
	for _, g := range ic.Groups {
		if err := w.writeGroup(ic, g); err != nil {
			return err
		}
	}
	if err := w.segment(Seg("IEA", strconv.Itoa(len(ic.Groups)), padControl(ic.Header.Control))); err != nil {
		return err
	}
	return w.w.Flush()
}

func (w *Writer) check() error {
	d := w.d
	bytes := []byte{d.Element, d.Component, d.Segment}
	if d.Repetition != 0 {
		bytes = append(bytes, d.Repetition)
	}
	for i, a := range bytes {
		if isAlnum(a) || a == ' ' || a == 0 {
			return &WriteError{Where: "delimiters", Reason: fmt.Sprintf("%q is a letter, digit, space or NUL", a), Err: ErrDelimiters}
		}
		for _, b := range bytes[i+1:] {
			if a == b {
				return &WriteError{Where: "delimiters", Reason: fmt.Sprintf("%q is used twice", a), Err: ErrDelimiters}
			}
		}
	}
	return nil
}

func padControl(c string) string {
	if allDigits(c) && len(c) < 9 && c != "" {
		return strings.Repeat("0", 9-len(c)) + c
	}
	return c
}

func (w *Writer) writeISA(h Header) error {
	version := h.Version
	if version == "" {
		version = "00401"
	}
	standards := h.Standards
	if version >= "00402" && w.d.Repetition != 0 {
		standards = string([]byte{w.d.Repetition})
	} else if standards == "" || (len(standards) == 1 && !isAlnum(standards[0]) && standards[0] != ' ') {
		standards = "U"
	}
	fields := []string{h.AuthQual, h.Auth, h.SecurityQual, h.Security, h.SenderQual, h.SenderID,
		h.ReceiverQual, h.ReceiverID, h.Date, h.Time, standards, version, padControl(h.Control), h.AckRequested, h.Usage}
	var b strings.Builder
	b.WriteString("ISA")
	for i, f := range fields {
		if len(f) > isaWidths[i] {
			return &WriteError{Where: fmt.Sprintf("ISA%02d", i+1), Reason: fmt.Sprintf("%q is longer than %d", f, isaWidths[i]), Err: ErrFieldTooLong}
		}
		if err := w.clean(fmt.Sprintf("ISA%02d", i+1), f, true); err != nil {
			return err
		}
		b.WriteByte(w.d.Element)
		b.WriteString(f)
		b.WriteString(strings.Repeat(" ", isaWidths[i]-len(f)))
	}
	b.WriteByte(w.d.Element)
	b.WriteByte(w.d.Component)
	b.WriteByte(w.d.Segment)
	b.WriteString(w.d.Suffix)
	_, err := w.w.WriteString(b.String())
	return err
}

func (w *Writer) writeGroup(ic *Interchange, g *Group) error {
	if w.Numbers != nil {
		n, err := w.Numbers.Next(LevelGroup)
		if err != nil {
			return fmt.Errorf("x12: getting a group control number: %w", err)
		}
		g.Control = strconv.FormatUint(n, 10)
	}
	if err := w.segment(Seg("GS", g.FunctionalID, g.AppSender, g.AppReceiver, g.Date, g.Time, g.Control, g.Agency, g.Version)); err != nil {
		return err
	}
	for _, s := range g.Sets {
		if err := w.writeSet(g, s); err != nil {
			return err
		}
	}
	return w.segment(Seg("GE", strconv.Itoa(len(g.Sets)), g.Control))
}

func (w *Writer) writeSet(g *Group, s *Set) error {
	if w.Numbers != nil {
		n, err := w.Numbers.Next(LevelSet)
		if err != nil {
			return fmt.Errorf("x12: getting a set control number: %w", err)
		}
		s.Control = fmt.Sprintf("%04d", n)
	}
	st := Seg("ST", s.ID, s.Control)
	if s.ImplRef != "" {
		st = Seg("ST", s.ID, s.Control, s.ImplRef)
	}
	if err := w.segment(st); err != nil {
		return err
	}
	for _, seg := range s.Segments {
		if err := w.segment(seg); err != nil {
			return err
		}
	}
	return w.segment(Seg("SE", strconv.Itoa(len(s.Segments)+2), s.Control))
}

// clean checks that v contains none of the delimiters.
func (w *Writer) clean(where, v string, simple bool) error {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == w.d.Element || c == w.d.Segment || (!simple && (c == w.d.Component || (w.d.Repetition != 0 && c == w.d.Repetition))) {
			return &WriteError{Where: where, Reason: fmt.Sprintf("value %q contains the delimiter %q", v, c), Err: ErrDelimiterInData}
		}
	}
	return nil
}

func (w *Writer) segment(seg Segment) error {
	if !validSegmentID(seg.ID) {
		return &WriteError{Where: fmt.Sprintf("segment %q", seg.ID), Reason: "segment ID is not 2 or 3 upper-case letters or digits", Err: ErrStructure}
	}
	// Trailing empty elements are not written.
	n := len(seg.Elements)
	for n > 0 && seg.Elements[n-1].raw == "" {
		n--
	}
	// A CR just before an LF terminator is read as a CRLF line end: keep an empty
	// element after such a value, or refuse when there is none.
	if w.d.Segment == '\n' && n > 0 && strings.HasSuffix(seg.Elements[n-1].raw, "\r") {
		if n == len(seg.Elements) {
			return &WriteError{Where: fmt.Sprintf("%s%02d", seg.ID, n), Reason: "value ends with CR before the LF segment terminator", Err: ErrDelimiterInData}
		}
		n++
	}
	if _, err := w.w.WriteString(seg.ID); err != nil {
		return err
	}
	for i, e := range seg.Elements[:n] {
		if err := w.w.WriteByte(w.d.Element); err != nil {
			return err
		}
		where := fmt.Sprintf("%s%02d", seg.ID, i+1)
		if e.comp == w.d.Component && e.rep == w.d.Repetition {
			if err := w.clean(where, e.raw, true); err != nil {
				return err
			}
			if _, err := w.w.WriteString(e.raw); err != nil {
				return err
			}
			continue
		}
		reps := e.Values()
		if len(reps) > 1 && w.d.Repetition == 0 {
			return &WriteError{Where: where, Reason: "repeated element but no repetition separator (ISA12 before 00402)", Err: ErrDelimiterInData}
		}
		for r, comps := range reps {
			if r > 0 {
				_ = w.w.WriteByte(w.d.Repetition)
			}
			for c, v := range comps {
				if err := w.clean(where, v, false); err != nil {
					return err
				}
				if c > 0 {
					_ = w.w.WriteByte(w.d.Component)
				}
				_, _ = w.w.WriteString(v)
			}
		}
	}
	if err := w.w.WriteByte(w.d.Segment); err != nil {
		return err
	}
	_, err := w.w.WriteString(w.d.Suffix)
	return err
}
