package x12

import (
	"fmt"
)

// TA105 interchange note codes used by the reader.
const (
	NoteOK                  = "000"
	NoteControlMismatch     = "001" // ISA13 and IEA02 differ
	NoteBadTerminator       = "004" // segment terminator invalid
	NoteBadSenderQual       = "005"
	NoteBadSenderID         = "006"
	NoteBadReceiverQual     = "007"
	NoteBadReceiverID       = "008"
	NoteBadVersion          = "017" // ISA12
	NoteBadControlNumber    = "018" // ISA13
	NoteBadAckRequested     = "019" // ISA14
	NoteBadUsage            = "020" // ISA15
	NoteBadGroupCount       = "021" // IEA01
	NoteBadControlStructure = "022"
	NotePrematureEnd        = "023"
	NoteBadContent          = "024" // e.g. an invalid GS, a segment outside a group
)

// AK905 / IK905 functional group syntax error codes used by the reader.
const (
	GroupTrailerMissing   = "3"
	GroupControlMismatch  = "4"
	GroupCountMismatch    = "5"
	GroupControlBadSyntax = "6"
)

// AK502 / IK502 transaction set syntax error codes used by the reader.
const (
	SetTrailerMissing  = "2"
	SetControlMismatch = "3"
	SetCountMismatch   = "4"
	SetSegmentsInError = "5"
	SetBadID           = "6"
	SetBadControl      = "7"
)

// AK304 / IK304 segment syntax error codes used by the reader.
const (
	SegUnrecognizedID   = "1"
	SegHasElementErrors = "8"
)

// AK403 / IK403 data element syntax error codes used by the reader.
const (
	ElemMandatoryMissing = "1"
	ElemTooShort         = "4"
	ElemTooLong          = "5"
	ElemInvalidChar      = "6"
	ElemInvalidCode      = "7"
	ElemInvalidDate      = "8"
	ElemInvalidTime      = "9"
)

// Acknowledgement status codes (AK5/IK5 AK501, AK901, TA104).
const (
	StatusAccepted   = "A"
	StatusWithErrors = "E"
	StatusPartial    = "P" // group only: at least one set rejected
	StatusRejected   = "R"
)

// EnvelopeError refuses an interchange, or stops the reader when the input cannot be
// split into interchanges at all.
type EnvelopeError struct {
	FilePos   int    // position of the offending segment in the input (1-based; 0 before any)
	SegmentID string // ISA, IEA, GS...
	Note      string // TA105 note code
	Reason    string
	Err       error // one of the sentinel errors
}

func (e *EnvelopeError) Error() string {
	return fmt.Sprintf("x12: interchange refused at segment %d (%s): %s [TA1 note %s]: %v",
		e.FilePos, e.SegmentID, e.Reason, e.Note, e.Err)
}

func (e *EnvelopeError) Unwrap() error { return e.Err }

// GroupError rejects a functional group (AK9 R).
type GroupError struct {
	FilePos   int
	SegmentID string
	Code      string // AK905
	Reason    string
	Err       error
}

func (e *GroupError) Error() string {
	return fmt.Sprintf("x12: functional group rejected at segment %d (%s): %s [AK905 %s]: %v",
		e.FilePos, e.SegmentID, e.Reason, e.Code, e.Err)
}

func (e *GroupError) Unwrap() error { return e.Err }

// SetResult is the syntax verdict of one transaction set: what goes in AK2..AK5 / IK5.
type SetResult struct {
	ID      string // ST01
	Control string // ST02
	ImplRef string // ST03
	FilePos int    // position of the ST in the input
	Status  string // A, E or R
	Codes   []string
	Errors  []SegmentError
	// BusinessUnit names the set's business identifier for a 999 CTX, e.g. BEG03 and the PO number.
	BusinessUnit, BusinessRef string
}

// SegmentError is one segment in error (AK3 / IK3) with its element errors (AK4 / IK4).
type SegmentError struct {
	ID       string
	SetPos   int
	FilePos  int
	Loop     string
	Code     string // AK304
	Reason   string
	Elements []ElementError
}

func (e SegmentError) Error() string {
	return fmt.Sprintf("segment %s at position %d of the set (%d in the file): %s [AK304 %s]",
		e.ID, e.SetPos, e.FilePos, e.Reason, e.Code)
}

// ElementError is one element in error (AK4 / IK4).
type ElementError struct {
	Pos       int    // element position in the segment
	Component int    // component position, 0 when not a composite
	Rep       int    // repetition, 0 when not repeated
	Ref       string // data element reference number
	Code      string // AK403
	Data      string // copy of the bad data
	Mandatory bool
	Reason    string
}
