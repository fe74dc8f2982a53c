package x12

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func readFile(t *testing.T, name string) []*Interchange {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	ics, err := ReadAll(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("ReadAll(%s): %v", name, err)
	}
	return ics
}

func readString(t *testing.T, s string) ([]*Interchange, error) {
	t.Helper()
	return ReadAll(strings.NewReader(s))
}

// golden compares got with testdata/golden/name, rewriting it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file %s: %v (run go test -run %s -update)", path, err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

var ackTime = time.Date(2026, 12, 4, 11, 5, 0, 0, time.UTC)

// ackBytes writes the acknowledgement of ic with fixed control numbers and time.
func ackBytes(t *testing.T, ic *Interchange) []byte {
	t.Helper()
	d := Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~', Suffix: "\n"}
	if !Uses999(ic.Header.Version + "0") {
		d.Repetition = 0
	}
	out := Acknowledge(ic, AckOptions{Now: ackTime, Delimiters: d})
	if out == nil {
		t.Fatal("Acknowledge returned nil")
	}
	var buf bytes.Buffer
	if err := NewWriter(&buf, d, &Sequence{}).Write(out); err != nil {
		t.Fatalf("writing the acknowledgement: %v", err)
	}
	return buf.Bytes()
}

func statuses(g *Group) []string {
	var out []string
	for _, r := range g.Results {
		out = append(out, r.Status)
	}
	return out
}

func TestRead850Retailer004010(t *testing.T) {
	ics := readFile(t, "850_004010_retailer.x12")
	if len(ics) != 1 {
		t.Fatalf("got %d interchanges, want 1", len(ics))
	}
	ic := ics[0]
	if ic.Err != nil || len(ic.Warnings) > 0 {
		t.Fatalf("interchange refused or warned: %v %v", ic.Err, ic.Warnings)
	}
	if ic.Delimiters != (Delimiters{Element: '*', Component: '>', Segment: '~'}) {
		t.Errorf("delimiters %+v", ic.Delimiters)
	}
	if ic.Header.SenderID != "RETAILCO" || ic.Header.SenderQual != "ZZ" || ic.Header.ReceiverID != "5551234567" || ic.Header.Control != "000000101" {
		t.Errorf("header %+v", ic.Header)
	}
	g := ic.Groups[0]
	if len(g.Sets) != 2 || !reflect.DeepEqual(statuses(g), []string{"A", "A"}) || g.Err != nil {
		t.Fatalf("sets %d statuses %v group err %v", len(g.Sets), statuses(g), g.Err)
	}
	s := g.Sets[1]
	if s.ID != "850" || s.Control != "0002" || s.Envelope.SenderID != "RETAILCO" || s.Envelope.GroupControl != "101" ||
		s.Envelope.Version != "004010" || s.Envelope.FunctionalID != "PO" || s.Envelope.InterchangeControl != "000000101" {
		t.Errorf("set envelope %+v", s)
	}
	beg := s.Segments[0]
	if beg.ID != "BEG" || beg.Element(3).Value() != "PO-4500012346" || beg.SetPos != 2 {
		t.Errorf("BEG %+v", beg)
	}
	// ISA 1, GS 2, first set 3..11 (9 segments), second ST at 12, BEG at 13.
	if beg.FilePos != 13 || g.Results[1].FilePos != 12 {
		t.Errorf("BEG file position %d, second ST at %d; want 13 and 12", beg.FilePos, g.Results[1].FilePos)
	}
	if !Accepted(ic, g, s.Result) {
		t.Error("set not accepted")
	}
}

func TestReadAmazonISA11U(t *testing.T) {
	check := func(t *testing.T, ic *Interchange) {
		t.Helper()
		po1 := ic.Groups[0].Sets[0].Segments[4]
		if po1.ID != "PO1" || po1.Element(7).Value() != "B07UXQ4Z2U" || len(po1.Element(7).Repetitions()) != 1 {
			t.Fatalf("PO107 split or wrong: %q %v", po1.Element(7).String(), po1.Element(7).Values())
		}
		beg := ic.Groups[0].Sets[0].Segments[0]
		if beg.Element(3).Value() != "8UQ2XZ7U" {
			t.Errorf("BEG03 = %q", beg.Element(3).Value())
		}
		if ic.Delimiters.Repetition != 0 {
			t.Errorf("repetition separator %q, want none", ic.Delimiters.Repetition)
		}
	}
	ics := readFile(t, "850_amazon_isa11_U.x12")
	check(t, ics[0])
	if ics[0].Err != nil || len(ics[0].Warnings) != 0 {
		t.Errorf("00401 with U: err %v warnings %v", ics[0].Err, ics[0].Warnings)
	}
	// The same file claiming 00501: U is still not a repetition separator, with a warning.
	data, _ := os.ReadFile("testdata/850_amazon_isa11_U.x12")
	ics, err := readString(t, strings.Replace(string(data), "*U*00401*", "*U*00501*", 1))
	if err != nil {
		t.Fatal(err)
	}
	check(t, ics[0])
	if len(ics[0].Warnings) != 1 || !strings.Contains(ics[0].Warnings[0].Message, "ISA11") {
		t.Errorf("warnings %v, want one about ISA11", ics[0].Warnings)
	}
}

func TestRead005010RepetitionAndComponent(t *testing.T) {
	ic := readFile(t, "850_005010_caret.x12")[0]
	if ic.Delimiters != (Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~'}) {
		t.Fatalf("delimiters %+v", ic.Delimiters)
	}
	s := ic.Groups[0].Sets[0]
	var ref Segment
	for _, seg := range s.Segments {
		if seg.ID == "REF" && seg.Element(1).Value() == "ZZ" {
			ref = seg
		}
	}
	e := ref.Element(4)
	if len(e.Repetitions()) != 2 || e.Repetition(2).Component(2) != "DEF" || e.Component(1) != "ZZ" || e.Component(2) != "ABC" {
		t.Errorf("REF04 %q: values %v", e.String(), e.Values())
	}
	if s.Result.Status != StatusAccepted || ic.Header.AckRequested != "1" || ic.Header.Usage != "T" {
		t.Errorf("status %s header %+v", s.Result.Status, ic.Header)
	}
}

func TestReadUnpaddedISA(t *testing.T) {
	ic := readFile(t, "850_unpadded_isa.x12")[0]
	if ic.Err != nil {
		t.Fatalf("refused: %v", ic.Err)
	}
	if len(ic.Warnings) != 1 || !strings.Contains(ic.Warnings[0].Message, "not padded") {
		t.Errorf("warnings %v, want the unpadded ISA warning", ic.Warnings)
	}
	if ic.Header.SenderID != "SMALLSHOP" || ic.Header.Control != "17" || ic.Header.Auth != "" || ic.Delimiters.Component != '>' {
		t.Errorf("header %+v delimiters %+v", ic.Header, ic.Delimiters)
	}
	if st := statuses(ic.Groups[0]); !reflect.DeepEqual(st, []string{"A"}) {
		t.Errorf("statuses %v", st)
	}
}

func TestReadDOSEOFAndBlankLines(t *testing.T) {
	ics := readFile(t, "850_dos_eof.x12")
	if len(ics) != 1 || ics[0].Err != nil || len(ics[0].Warnings) != 0 {
		t.Fatalf("got %d interchanges, err %v, warnings %v", len(ics), ics[0].Err, ics[0].Warnings)
	}
	if st := statuses(ics[0].Groups[0]); !reflect.DeepEqual(st, []string{"A"}) {
		t.Errorf("statuses %v", st)
	}
}

func TestReadTwoInterchanges(t *testing.T) {
	ics := readFile(t, "two_interchanges.x12")
	if len(ics) != 2 {
		t.Fatalf("got %d interchanges, want 2", len(ics))
	}
	if ics[0].Delimiters.Segment != '\'' || ics[1].Delimiters.Segment != '\n' || ics[1].Delimiters.Element != '|' {
		t.Errorf("delimiters %+v / %+v", ics[0].Delimiters, ics[1].Delimiters)
	}
	if ics[0].Err != nil || ics[1].Err != nil {
		t.Fatalf("refused: %v / %v", ics[0].Err, ics[1].Err)
	}
	if n := len(ics[1].Groups[0].Sets); n != 2 || ics[1].Groups[0].Sets[1].Segments[0].Element(3).Value() != "PO-303" {
		t.Errorf("second interchange has %d sets", n)
	}
	if ics[1].Header.SenderID != "OTHERRETAIL" || ics[1].FilePos != 13 {
		t.Errorf("second interchange sender %q at segment %d, want OTHERRETAIL at 13", ics[1].Header.SenderID, ics[1].FilePos)
	}
}

func TestReadBadSetAmongGood(t *testing.T) {
	ic := readFile(t, "bad_set_among_good.x12")[0]
	g := ic.Groups[0]
	if ic.Err != nil || g.Err != nil {
		t.Fatalf("envelope refused: %v %v", ic.Err, g.Err)
	}
	if st := statuses(g); !reflect.DeepEqual(st, []string{"A", "R", "A"}) {
		t.Fatalf("statuses %v, want A R A", st)
	}
	if !reflect.DeepEqual(g.Results[1].Codes, []string{SetCountMismatch}) {
		t.Errorf("codes %v, want [4]", g.Results[1].Codes)
	}
	if st, n := GroupStatus(g); st != StatusPartial || n != 2 {
		t.Errorf("group status %s accepted %d, want P 2", st, n)
	}
	golden(t, "bad_set_among_good.997", ackBytes(t, ic))
}

func TestReadBrokenIEACount(t *testing.T) {
	ic := readFile(t, "broken_iea_count.x12")[0]
	var env *EnvelopeError
	if ic.Err == nil || !errors.As(error(ic.Err), &env) || env.Note != NoteBadGroupCount || env.SegmentID != "IEA" || env.FilePos != 12 || !errors.Is(env, ErrCount) {
		t.Fatalf("interchange error %v, want IEA at segment 12 with note 021", ic.Err)
	}
	if Accepted(ic, ic.Groups[0], ic.Groups[0].Results[0]) {
		t.Error("a set of a refused interchange is accepted")
	}
	ack := ackBytes(t, ic)
	if !bytes.Contains(ack, []byte("TA1*000000501*261204*1030*R*021~")) || bytes.Contains(ack, []byte("GS*")) {
		t.Errorf("ack %s: want a TA1 R 021 and no functional group", ack)
	}
	golden(t, "broken_iea_count.ta1", ack)
}

func TestRead999ElementErrors(t *testing.T) {
	ic := readFile(t, "850_005010_element_errors.x12")[0]
	g := ic.Groups[0]
	if st := statuses(g); !reflect.DeepEqual(st, []string{"R", "E", "A"}) {
		t.Fatalf("statuses %v, want R E A", st)
	}
	e := g.Results[0].Errors[0]
	if e.ID != "BEG" || e.SetPos != 2 || e.Elements[0].Pos != 5 || e.Elements[0].Code != ElemTooLong || e.Elements[0].Data != "2026-12-04" {
		t.Errorf("first set error %+v", e)
	}
	e = g.Results[1].Errors[0]
	if e.ID != "PO1" || e.Loop != "PO1" || e.Elements[0].Pos != 3 || e.Elements[0].Code != ElemTooLong {
		t.Errorf("second set error %+v", e)
	}
	ack := ackBytes(t, ic)
	for _, want := range []string{"TA1*000000601*261204*1030*A*000~", "ST*999*0001*005010X231A1~", "AK1*PO*601*005010~",
		"IK3*BEG*2**8~", "CTX*BEG03:PO-601~", "IK4*5*373*5*2026-12-04~", "IK5*R*5~", "IK3*PO1*6*PO1*8~", "IK5*E~", "AK9*P*3*3*2~"} {
		if !bytes.Contains(ack, []byte(want)) {
			t.Errorf("999 lacks %q:\n%s", want, ack)
		}
	}
	golden(t, "850_005010_element_errors.999", ack)
}

func TestReadRetailer997Golden(t *testing.T) {
	ic := readFile(t, "850_004010_retailer.x12")[0]
	golden(t, "850_004010_retailer.997", ackBytes(t, ic))
}

// envelope builds a one-group interchange around body for the envelope tests.
func envelope(body, gsCtl, geCount, geCtl, ieaCount, ieaCtl string) string {
	return "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261204*1030*U*00401*000000009*0*P*>~\n" +
		"GS*PO*S*R*20261204*1030*" + gsCtl + "*X*004010~\n" + body + "GE*" + geCount + "*" + geCtl + "~\nIEA*" + ieaCount + "*" + ieaCtl + "~\n"
}

const goodSet = "ST*850*0001~\nBEG*00*SA*P1**20261204~\nSE*3*0001~\n"

func TestEnvelopeErrors(t *testing.T) {
	cases := []struct {
		name      string
		in        string
		note      string // TA105 of the refused interchange, "" when accepted
		pos       int
		sentinel  error
		groupCode string
		setCodes  []string
	}{
		{"good", envelope(goodSet, "9", "1", "9", "1", "000000009"), "", 0, nil, "", nil},
		{"IEA control mismatch", envelope(goodSet, "9", "1", "9", "1", "000000010"), NoteControlMismatch, 7, ErrControlNumber, "", nil},
		{"IEA count", envelope(goodSet, "9", "1", "9", "3", "000000009"), NoteBadGroupCount, 7, ErrCount, "", nil},
		{"truncated", envelope(goodSet, "9", "1", "9", "1", "000000009")[:180], NotePrematureEnd, 4, ErrTruncated, GroupTrailerMissing, []string{SetTrailerMissing}},
		{"GE count", envelope(goodSet, "9", "2", "9", "1", "000000009"), "", 0, nil, GroupCountMismatch, nil},
		{"GE control", envelope(goodSet, "9", "1", "8", "1", "000000009"), "", 0, nil, GroupControlMismatch, nil},
		{"missing SE", envelope("ST*850*0001~\nBEG*00*SA*P1**20261204~\n"+goodSet, "9", "2", "9", "1", "000000009"), "", 0, nil, "", []string{SetTrailerMissing}},
		{"SE control", envelope("ST*850*0001~\nBEG*00*SA*P1**20261204~\nSE*3*0002~\n", "9", "1", "9", "1", "000000009"), "", 0, nil, "", []string{SetControlMismatch}},
		{"segment outside group", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "GS*", "REF*X~\nGS*", 1), NoteBadContent, 2, ErrStructure, "", nil},
		{"ISA before IEA", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "IEA*1*000000009~\n", "", 1) + envelope(goodSet, "9", "1", "9", "1", "000000009"), NotePrematureEnd, 7, ErrTruncated, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ics, err := readString(t, c.in)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			ic := ics[0]
			if c.note == "" && ic.Err != nil {
				t.Fatalf("refused: %v", ic.Err)
			}
			if c.note != "" {
				if ic.Err == nil || ic.Err.Note != c.note || ic.Err.FilePos != c.pos || !errors.Is(ic.Err, c.sentinel) {
					t.Fatalf("error %v, want note %s at segment %d wrapping %v", ic.Err, c.note, c.pos, c.sentinel)
				}
				if st, note := InterchangeStatus(ic); st != StatusRejected || note != c.note {
					t.Errorf("TA1 status %s %s", st, note)
				}
			}
			g := ic.Groups[0]
			if c.groupCode == "" && g.Err != nil || c.groupCode != "" && (g.Err == nil || g.Err.Code != c.groupCode) {
				t.Errorf("group error %v, want code %q", g.Err, c.groupCode)
			}
			if c.setCodes != nil && !reflect.DeepEqual(g.Results[0].Codes, c.setCodes) {
				t.Errorf("set codes %v, want %v", g.Results[0].Codes, c.setCodes)
			}
		})
	}
}

func TestReadStopsOnUnreadableInput(t *testing.T) {
	cases := []struct {
		name, in string
		want     error
	}{
		{"not X12", "UNA:+.? 'UNB+UNOC:3'", ErrNotX12},
		{"garbage after IEA", envelope(goodSet, "9", "1", "9", "1", "000000009") + "hello", ErrNotX12},
		{"letter terminator", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "*P*>~", "*P*>A", 1), ErrDelimiters},
		{"ISA too short", "ISA*00*", ErrBadISA},
		{"ISA06 longer than 15", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "*SENDER         *", "*SENDER-TOO-LONG1*", 1), ErrBadISA},
		{"ISA field with the terminator", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "*00*          *ZZ", "*00*AB~D      *ZZ", 1), ErrBadISA},
		{"ISA12 not a version", strings.Replace(envelope(goodSet, "9", "1", "9", "1", "000000009"), "00401", "4010X", 1), ErrBadISA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readString(t, c.in)
			var env *EnvelopeError
			if !errors.As(err, &env) || !errors.Is(err, c.want) {
				t.Fatalf("err %v, want an *EnvelopeError wrapping %v", err, c.want)
			}
			if c.name == "ISA06 longer than 15" && (env.Note != NoteBadSenderID || env.FilePos != 1) {
				t.Errorf("note %s at segment %d, want 006 at 1", env.Note, env.FilePos)
			}
		})
	}
}

func TestSegmentTerminatorVariants(t *testing.T) {
	base := envelope(goodSet, "9", "1", "9", "1", "000000009")
	for _, v := range []struct{ name, in string }{
		{"no newlines", strings.ReplaceAll(base, "~\n", "~")},
		{"CRLF", strings.ReplaceAll(base, "~\n", "~\r\n")},
		{"newline terminator", strings.ReplaceAll(base, "~\n", "\n")},
		{"CR terminator", strings.ReplaceAll(base, "~\n", "\r\n")},
		{"LF terminator with CRLF lines", strings.Replace(strings.ReplaceAll(base, "~\n", "\r\n"), ">\r\n", ">\n", 1)},
		{"pipe and caret", strings.NewReplacer("*", "|", ">", "^").Replace(base)},
		{"0x1D terminator", strings.ReplaceAll(base, "~\n", "\x1d")},
		{"no final terminator", strings.TrimSuffix(base, "~\n")},
	} {
		t.Run(v.name, func(t *testing.T) {
			ics, err := readString(t, v.in)
			if err != nil || len(ics) != 1 || ics[0].Err != nil {
				t.Fatalf("err %v interchanges %d", err, len(ics))
			}
			s := ics[0].Groups[0].Sets[0]
			if s.Result.Status != StatusAccepted || s.Segments[0].Element(3).Value() != "P1" {
				t.Errorf("set %+v", s.Result)
			}
		})
	}
}

func TestHandlerErrorStopsReading(t *testing.T) {
	stop := errors.New("stop here")
	n := 0
	err := Read(strings.NewReader(envelope(goodSet+goodSet, "9", "2", "9", "1", "000000009")), Handler{
		Set: func(*Interchange, *Group, *Set) error { n++; return stop },
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err %v after %d sets, want the handler's error after 1", err, n)
	}
}

func TestAcknowledgeCleansEchoedData(t *testing.T) {
	// Pipe-delimited inbound whose IDs and bad data hold the ack's own delimiters.
	in := strings.NewReplacer("*", "|", ">", "^").Replace(envelope("ST*850*0001~\nBEG*00*SA*P1**2026~12~\nSE*3*0001~\n", "9", "1", "9", "1", "000000009"))
	in = strings.Replace(in, "SENDER         ", "SEND*ER:1      ", 1)
	in = strings.Replace(in, "~\nBEG|00|SA|P1||2026~12~\n", "~\nBEG|00|SA|P1||2026*12~\n", 1)
	ics, err := readString(t, in)
	if err != nil || ics[0].Err != nil {
		t.Fatalf("%v %v", err, ics[0].Err)
	}
	ack := ackBytes(t, ics[0])
	for _, want := range []string{"*SENDER1        *", "AK4*5*373*4*202612~"} {
		if !bytes.Contains(ack, []byte(want)) {
			t.Errorf("ack lacks %q:\n%s", want, ack)
		}
	}
}
