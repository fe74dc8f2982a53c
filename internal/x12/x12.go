// Package x12 reads and writes ASC X12 interchanges (ISA/IEA, GS/GE, ST/SE) and
// builds and parses the acknowledgements that go with them (997, 999, TA1).
//
// The reader streams: it hands each transaction set to a callback as soon as its SE
// is read, so memory is bounded by the largest set, not by the file. Because the
// envelope verdict is only known at GE and IEA, a set delivered to Handler.Set is
// provisional until Handler.GroupEnd and Handler.InterchangeEnd accept its group and
// interchange (see Accepted). DESIGN.md says what is tolerated and what is strict.
//
// Positions follow X12 numbering: elements and components are 1-based, a set's ST is
// segment 1 of the set, and a segment's file position counts every segment read from
// the start of the input, ISA included.
package x12

import (
	"errors"
	"strings"
)

// Sentinel errors; the typed errors below wrap one of them so callers can use errors.Is.
var (
	// ErrNotX12 means the input (or the data after an IEA) does not start with an ISA.
	ErrNotX12 = errors.New("not an X12 interchange: no ISA segment where one was expected")
	// ErrBadISA means the ISA header cannot be read or has an invalid field.
	ErrBadISA = errors.New("invalid ISA interchange header")
	// ErrDelimiters means the delimiters declared by the ISA cannot be used.
	ErrDelimiters = errors.New("invalid delimiters in ISA")
	// ErrControlNumber means a header and trailer control number do not match.
	ErrControlNumber = errors.New("control number in header and trailer do not match")
	// ErrCount means a trailer's count does not match what was read.
	ErrCount = errors.New("trailer count does not match actual count")
	// ErrTruncated means the input ended (or a new ISA began) before the trailer.
	ErrTruncated = errors.New("premature end of interchange: trailer missing")
	// ErrStructure means a segment appears where the envelope does not allow it.
	ErrStructure = errors.New("invalid envelope structure")
	// ErrSegmentTooLong means a segment is longer than Reader.MaxSegmentLen.
	ErrSegmentTooLong = errors.New("segment longer than the reader's limit")
	// ErrDelimiterInData means a value to be written contains one of the delimiters.
	ErrDelimiterInData = errors.New("value contains a delimiter")
	// ErrFieldTooLong means an ISA field to be written is longer than its fixed width.
	ErrFieldTooLong = errors.New("ISA field longer than its fixed width")
	// ErrBadAck means a received 997, 999 or TA1 cannot be understood.
	ErrBadAck = errors.New("invalid acknowledgement")
)

// Delimiters are the separators of one interchange. Repetition is 0 when the
// interchange has none (ISA12 before 00402, or ISA11 a letter or digit).
type Delimiters struct {
	Element    byte
	Component  byte
	Repetition byte
	Segment    byte
	// Suffix is written after each segment terminator ("", "\n" or "\r\n"); the
	// reader ignores CR and LF between segments whatever it is.
	Suffix string
}

// DefaultDelimiters are the common `*`, `:` (ISA16), `^` (ISA11) and `~` with a newline.
var DefaultDelimiters = Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~', Suffix: "\n"}

// Internal separators of elements built with NewElement / NewRepeated: ASCII unit and
// record separators, which the writer re-encodes with the output's delimiters.
const (
	unitSep   = 0x1f
	recordSep = 0x1e
)

// Element is one data element: a simple value, a composite (components) or a
// repeated element (repetitions, each possibly a composite). It keeps the text as
// read and splits it on demand.
type Element struct {
	raw       string
	comp, rep byte
}

// NewElement builds an element from its components (one for a simple element). A
// simple element may hold any byte; components of a composite must not hold the
// ASCII unit and record separators (0x1F, 0x1E), which separate them until written.
func NewElement(components ...string) Element {
	if len(components) == 1 {
		return Element{raw: components[0]}
	}
	return Element{raw: strings.Join(components, string([]byte{unitSep})), comp: unitSep, rep: recordSep}
}

// NewRepeated builds a repeated element; each repetition is a list of components.
func NewRepeated(reps ...[]string) Element {
	parts := make([]string, len(reps))
	for i, r := range reps {
		parts[i] = strings.Join(r, string([]byte{unitSep}))
	}
	return Element{raw: strings.Join(parts, string([]byte{recordSep})), comp: unitSep, rep: recordSep}
}

// String is the element's text as read, with its own separators.
func (e Element) String() string { return e.raw }

// IsEmpty reports whether the element has no data.
func (e Element) IsEmpty() bool { return e.raw == "" }

// Value is the first component of the first repetition (the whole value of a simple element).
func (e Element) Value() string { return e.Component(1) }

// Repetitions splits a repeated element; an element without repetitions is its own only one.
func (e Element) Repetitions() []Element {
	if e.rep == 0 || strings.IndexByte(e.raw, e.rep) < 0 {
		return []Element{e}
	}
	parts := strings.Split(e.raw, string([]byte{e.rep}))
	out := make([]Element, len(parts))
	for i, p := range parts {
		out[i] = Element{raw: p, comp: e.comp}
	}
	return out
}

// Repetition returns repetition i (1-based), or an empty element.
func (e Element) Repetition(i int) Element {
	reps := e.Repetitions()
	if i < 1 || i > len(reps) {
		return Element{comp: e.comp}
	}
	return reps[i-1]
}

// Components splits the first repetition into its components.
func (e Element) Components() []string {
	first := e.raw
	if e.rep != 0 {
		if i := strings.IndexByte(first, e.rep); i >= 0 {
			first = first[:i]
		}
	}
	if e.comp == 0 {
		return []string{first}
	}
	return strings.Split(first, string([]byte{e.comp}))
}

// Component returns component i (1-based) of the first repetition, or "".
func (e Element) Component(i int) string {
	first := e.raw
	if e.rep != 0 {
		if j := strings.IndexByte(first, e.rep); j >= 0 {
			first = first[:j]
		}
	}
	if e.comp == 0 {
		if i == 1 {
			return first
		}
		return ""
	}
	for k := 1; k < i; k++ {
		j := strings.IndexByte(first, e.comp)
		if j < 0 {
			return ""
		}
		first = first[j+1:]
	}
	if i < 1 {
		return ""
	}
	if j := strings.IndexByte(first, e.comp); j >= 0 {
		first = first[:j]
	}
	return first
}

// Values is the element as repetitions of components; nil for an empty element.
// Two elements with equal Values are equal whatever separators they were read with.
func (e Element) Values() [][]string {
	if e.raw == "" {
		return nil
	}
	reps := e.Repetitions()
	out := make([][]string, len(reps))
	for i, r := range reps {
		out[i] = r.Components()
	}
	return out
}

// Segment is one segment: its ID and elements, with where it was read.
type Segment struct {
	ID       string
	Elements []Element
	// SetPos is the segment's position in its transaction set (ST is 1); 0 outside a set.
	SetPos int
	// FilePos is the segment's position in the input (the first ISA is 1); 0 when built.
	FilePos int
}

// Seg builds a segment of simple elements, for writing.
func Seg(id string, values ...string) Segment {
	s := Segment{ID: id, Elements: make([]Element, len(values))}
	for i, v := range values {
		s.Elements[i] = NewElement(v)
	}
	return s
}

// Element returns element i (1-based, as in BEG03), or an empty element.
func (s Segment) Element(i int) Element {
	if i < 1 || i > len(s.Elements) {
		return Element{}
	}
	return s.Elements[i-1]
}

// Header is the ISA interchange header, with the fixed-width padding removed.
type Header struct {
	AuthQual, Auth           string // ISA01, ISA02
	SecurityQual, Security   string // ISA03, ISA04
	SenderQual, SenderID     string // ISA05, ISA06
	ReceiverQual, ReceiverID string // ISA07, ISA08
	Date, Time               string // ISA09 (YYMMDD), ISA10 (HHMM)
	// Standards is ISA11 as read: the repetition separator from 00402, else usually "U".
	Standards    string
	Version      string // ISA12, e.g. 00401, 00501
	Control      string // ISA13
	AckRequested string // ISA14: "1" asks for a TA1
	Usage        string // ISA15: P production, T test
}

// Envelope is the context of a transaction set: who sent it, in which interchange and group.
type Envelope struct {
	SenderQual, SenderID, ReceiverQual, ReceiverID string
	InterchangeControl                             string
	Usage                                          string
	FunctionalID                                   string // GS01, e.g. PO
	AppSender, AppReceiver                         string // GS02, GS03
	GroupControl                                   string // GS06
	Version                                        string // GS08, e.g. 004010, 005010
}

// Set is one transaction set. Segments are the segments between ST and SE.
type Set struct {
	ID       string // ST01
	Control  string // ST02
	ImplRef  string // ST03 (005010 implementation convention reference), may be empty
	Segments []Segment
	Envelope Envelope
	// Result is the set's own syntax verdict, filled by the reader.
	Result SetResult
}

// Group is one functional group.
type Group struct {
	FunctionalID string // GS01
	AppSender    string // GS02
	AppReceiver  string // GS03
	Date, Time   string // GS04, GS05
	Control      string // GS06
	Agency       string // GS07, X
	Version      string // GS08
	// Sets holds the sets for writing, and after ReadAll; the streaming reader leaves it nil.
	Sets []*Set
	// Results holds each set's verdict in order, filled by the reader.
	Results []SetResult
	// Received counts the sets read; AcceptedSets those accepted (A or E), of which
	// WithErrors with errors (E). The reader keeps them even with DiscardResults.
	Received, AcceptedSets, WithErrors int
	// Included is GE01 as read.
	Included int
	FilePos  int
	// Err is set when the group's envelope is bad (AK9 R); its sets are then not accepted.
	Err *GroupError
}

// Interchange is one ISA/IEA interchange.
type Interchange struct {
	Header     Header
	Delimiters Delimiters
	Groups     []*Group
	// TA1 holds TA1 segments found in the interchange (received interchange acks), or to write.
	TA1 []Segment
	// Included is IEA01 as read.
	Included int
	FilePos  int
	// Err is set when the interchange is refused (TA1 R); none of its sets is accepted.
	Err *EnvelopeError
	// Noted lists header problems that do not refuse the interchange (TA1 E).
	Noted    []*EnvelopeError
	Warnings []Warning
}

// Warning is a tolerated deviation, with where it was seen.
type Warning struct {
	FilePos int
	Message string
}

// Accepted reports whether a set can be used: its own syntax was accepted (A or E)
// and neither its group nor its interchange was refused.
func Accepted(ic *Interchange, g *Group, r SetResult) bool {
	return ic.Err == nil && (g == nil || g.Err == nil) && r.Status != StatusRejected
}
