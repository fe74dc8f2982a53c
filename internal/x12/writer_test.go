package x12

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// canon is an interchange without positions, verdicts or separators: what must survive
// a write and a read.
type canonIC struct {
	Header Header
	TA1    [][][][]string
	Groups []canonGroup
}

type canonGroup struct {
	FunctionalID, AppSender, AppReceiver, Date, Time, Control, Agency, Version string
	Sets                                                                       []canonSet
}

type canonSet struct {
	ID, Control, ImplRef string
	Segs                 []string
	Vals                 [][][][]string
}

func canonSegs(segs []Segment) ([]string, [][][][]string) {
	var ids []string
	var vals [][][][]string
	for _, s := range segs {
		ids = append(ids, s.ID)
		var v [][][]string
		for _, e := range s.Elements {
			v = append(v, e.Values())
		}
		for len(v) > 0 && v[len(v)-1] == nil {
			v = v[:len(v)-1]
		}
		if len(v) == 0 {
			v = nil
		}
		vals = append(vals, v)
	}
	return ids, vals
}

func canon(ic *Interchange) canonIC {
	c := canonIC{Header: ic.Header}
	c.Header.Control = strings.TrimLeft(c.Header.Control, "0")
	c.Header.Standards = ""
	_, c.TA1 = canonSegs(ic.TA1)
	for _, g := range ic.Groups {
		cg := canonGroup{g.FunctionalID, g.AppSender, g.AppReceiver, g.Date, g.Time, g.Control, g.Agency, g.Version, nil}
		for _, s := range g.Sets {
			cs := canonSet{ID: s.ID, Control: s.Control, ImplRef: s.ImplRef}
			cs.Segs, cs.Vals = canonSegs(s.Segments)
			cg.Sets = append(cg.Sets, cs)
		}
		c.Groups = append(c.Groups, cg)
	}
	return c
}

func writeRead(t *testing.T, ic *Interchange, d Delimiters) *Interchange {
	t.Helper()
	var buf bytes.Buffer
	if err := NewWriter(&buf, d, nil).Write(ic); err != nil {
		t.Fatalf("Write: %v", err)
	}
	ics, err := ReadAll(&buf)
	if err != nil || len(ics) != 1 {
		t.Fatalf("reading back: %v, %d interchanges:\n%s", err, len(ics), buf.String())
	}
	return ics[0]
}

func TestWriteReadRoundTripTestdata(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.x12")
	if len(files) < 9 {
		t.Fatalf("found %d testdata files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, ic := range readFile(t, filepath.Base(f)) {
				own := ic.Delimiters
				for _, d := range []Delimiters{own, DefaultDelimiters, {Element: '|', Component: '>', Repetition: '!', Segment: '\n'}} {
					if d.Repetition != 0 && ic.Header.Version < "00402" {
						d.Repetition = 0
					}
					back := writeRead(t, ic, d)
					if got, want := canon(back), canon(ic); !reflect.DeepEqual(got, want) {
						t.Fatalf("with %+v:\ngot  %+v\nwant %+v", d, got, want)
					}
					if back.Err != nil && ic.Err == nil {
						t.Errorf("written interchange refused: %v", back.Err)
					}
				}
			}
		})
	}
}

func TestWriterComputesCountsAndControlNumbers(t *testing.T) {
	seq := &Sequence{}
	ic := &Interchange{Header: Header{AuthQual: "00", SecurityQual: "00", AckRequested: "0", SenderQual: "ZZ", SenderID: "ACMEDIST", ReceiverQual: "ZZ", ReceiverID: "RETAILCO",
		Date: "261204", Time: "1200", Version: "00501", Usage: "T"}}
	for g := 0; g < 2; g++ {
		grp := &Group{FunctionalID: "PR", AppSender: "ACMEDIST", AppReceiver: "RETAILCO", Date: "20261204", Time: "1200", Agency: "X", Version: "005010"}
		for s := 0; s < 3; s++ {
			grp.Sets = append(grp.Sets, &Set{ID: "855", Segments: []Segment{Seg("BAK", "00", "AD", fmt.Sprint("PO", s), "20261204"),
				{ID: "REF", Elements: []Element{NewElement("ZZ"), NewElement("x"), {}, NewRepeated([]string{"A", "1"}, []string{"B", "2"})}}}})
		}
		ic.Groups = append(ic.Groups, grp)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, Delimiters{Element: '*', Component: ':', Repetition: '^', Segment: '~', Suffix: "\n"}, seq)
	if err := w.Write(ic); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	if len(lines[0]) != 106 || !strings.HasPrefix(lines[0], "ISA*00*          *00*          *ZZ*ACMEDIST       *ZZ*RETAILCO       *261204*1200*^*00501*000000001*0*T*:~") {
		t.Errorf("ISA %q (%d chars)", lines[0], len(lines[0]))
	}
	for _, want := range []string{"GS*PR*ACMEDIST*RETAILCO*20261204*1200*1*X*005010~", "ST*855*0003~", "REF*ZZ*x**A:1^B:2~",
		"SE*4*0006~", "GE*3*2~", "IEA*2*000000001~"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if ic.Groups[1].Control != "2" || ic.Groups[1].Sets[2].Control != "0006" || ic.Header.Control != "000000001" {
		t.Errorf("assigned numbers not stored back: %s %s %s", ic.Header.Control, ic.Groups[1].Control, ic.Groups[1].Sets[2].Control)
	}
	back, err := ReadAll(strings.NewReader(out))
	if err != nil || back[0].Err != nil {
		t.Fatalf("reading back: %v %v", err, back[0].Err)
	}
	if st, _ := GroupStatus(back[0].Groups[1]); st != StatusAccepted {
		t.Errorf("group read back %s", st)
	}
}

func TestWriterRefusesDelimiterInData(t *testing.T) {
	for _, c := range []struct {
		name string
		ic   *Interchange
		want error
	}{
		{"element separator in value", &Interchange{Groups: []*Group{{FunctionalID: "PO", Version: "004010", Control: "1",
			Sets: []*Set{{ID: "850", Control: "0001", Segments: []Segment{Seg("BEG", "00", "SA", "A*B")}}}}}}, ErrDelimiterInData},
		{"component separator in simple value", &Interchange{Groups: []*Group{{FunctionalID: "PO", Version: "004010", Control: "1",
			Sets: []*Set{{ID: "850", Control: "0001", Segments: []Segment{Seg("BEG", "00", "SA", "A:B")}}}}}}, ErrDelimiterInData},
		{"repetition before 00402", &Interchange{Groups: []*Group{{FunctionalID: "PO", Version: "004010", Control: "1",
			Sets: []*Set{{ID: "850", Control: "0001", Segments: []Segment{{ID: "REF", Elements: []Element{NewRepeated([]string{"A"}, []string{"B"})}}}}}}}}, ErrDelimiterInData},
		{"sender too long", &Interchange{Header: Header{SenderID: "THIS-ID-IS-LONGER-THAN-15"}}, ErrFieldTooLong},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Delimiters{Element: '*', Component: ':', Segment: '~'}
			err := NewWriter(&bytes.Buffer{}, d, nil).Write(c.ic)
			var we *WriteError
			if !errors.As(err, &we) || !errors.Is(err, c.want) {
				t.Fatalf("err %v, want a *WriteError wrapping %v", err, c.want)
			}
		})
	}
}

// TestWriteReadProperty writes random interchanges with random partner delimiters and
// versions and checks that reading gives back the same interchange, accepted.
func TestWriteReadProperty(t *testing.T) {
	seps := []byte("*|^~>:'!+\n\x1d\x1c\xa7\x85") // bytes over 0x7F too: partners on Latin-1 systems
	rng := rand.New(rand.NewPCG(20, 26))
	for iter := 0; iter < 300; iter++ {
		perm := rng.Perm(len(seps))
		d := Delimiters{Element: seps[perm[0]], Component: seps[perm[1]], Repetition: seps[perm[2]], Segment: seps[perm[3]]}
		if rng.IntN(2) == 0 && d.Segment != '\n' {
			d.Suffix = "\n"
		}
		version, gsVersion := "00501", "005010"
		if rng.IntN(2) == 0 {
			version, gsVersion, d.Repetition = "00401", "004010", 0
		}
		word := func(n int) string {
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -./#&"
			b := make([]byte, 1+rng.IntN(n))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			return strings.TrimSpace(string(b)) + "X"
		}
		ic := &Interchange{Header: Header{AuthQual: "00", SecurityQual: "00", SenderQual: "ZZ", SenderID: word(10), ReceiverQual: "01",
			ReceiverID: word(10), Date: "261204", Time: "0900", Version: version, Control: fmt.Sprintf("%09d", rng.IntN(1e9)),
			AckRequested: "0", Usage: "P"}}
		for g := 0; g <= rng.IntN(3); g++ {
			grp := &Group{FunctionalID: "PO", AppSender: word(8), AppReceiver: word(8), Date: "20261204", Time: "0900",
				Control: fmt.Sprint(1 + rng.IntN(999999)), Agency: "X", Version: gsVersion}
			for s := 0; s <= rng.IntN(4); s++ {
				set := &Set{ID: "850", Control: fmt.Sprintf("%04d", s+1)}
				for k := 0; k < 1+rng.IntN(6); k++ {
					seg := Segment{ID: []string{"REF", "N1", "PID", "MSG"}[rng.IntN(4)]}
					for e := 0; e < 1+rng.IntN(6); e++ {
						switch rng.IntN(4) {
						case 0:
							seg.Elements = append(seg.Elements, Element{})
						case 1:
							seg.Elements = append(seg.Elements, NewElement(word(12), word(5)))
						case 2:
							if d.Repetition != 0 {
								seg.Elements = append(seg.Elements, NewRepeated([]string{word(4)}, []string{word(4), word(3)}))
								continue
							}
							fallthrough
						default:
							seg.Elements = append(seg.Elements, NewElement(word(20)))
						}
					}
					set.Segments = append(set.Segments, seg)
				}
				grp.Sets = append(grp.Sets, set)
			}
			ic.Groups = append(ic.Groups, grp)
		}
		back := writeRead(t, ic, d)
		if back.Err != nil {
			t.Fatalf("iteration %d with %+v: refused: %v", iter, d, back.Err)
		}
		for _, g := range back.Groups {
			if st, _ := GroupStatus(g); st != StatusAccepted {
				t.Fatalf("iteration %d: group %s status %s: %+v", iter, g.Control, st, g.Results)
			}
		}
		if got, want := canon(back), canon(ic); !reflect.DeepEqual(got, want) {
			t.Fatalf("iteration %d with %+v:\ngot  %+v\nwant %+v", iter, d, got, want)
		}
	}
}

func TestParseGeneratedAcks(t *testing.T) {
	for _, c := range []struct {
		file   string
		kind   string
		status string
		sets   []string
	}{
		{"bad_set_among_good.x12", "997", "P", []string{"A", "R", "A"}},
		{"850_005010_element_errors.x12", "999", "P", []string{"R", "E", "A"}},
		{"850_004010_retailer.x12", "997", "A", []string{"A", "A"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			ic := readFile(t, c.file)[0]
			acks, err := ReadAll(bytes.NewReader(ackBytes(t, ic)))
			if err != nil || acks[0].Err != nil {
				t.Fatalf("reading the ack: %v %v", err, acks[0].Err)
			}
			rep, err := ParseFunctionalAck(acks[0].Groups[0].Sets[0])
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range rep.Sets {
				got = append(got, s.Status)
			}
			if rep.Kind != c.kind || rep.Status != c.status || !reflect.DeepEqual(got, c.sets) || rep.GroupControl != ic.Groups[0].Control ||
				rep.Received != len(c.sets) {
				t.Errorf("report %+v, want %s %s %v", rep, c.kind, c.status, c.sets)
			}
			if st, ok := rep.SetStatus("0002"); !ok || st != c.sets[1] {
				t.Errorf("SetStatus(0002) = %s %v", st, ok)
			}
			if c.kind == "999" {
				e := rep.Sets[0].Errors[0]
				if e.ID != "BEG" || e.SetPos != 2 || e.Elements[0].Pos != 5 || e.Elements[0].Code != ElemTooLong {
					t.Errorf("IK3/IK4 parsed as %+v", e)
				}
			}
			if len(acks[0].TA1) > 0 {
				if r, err := ParseTA1(acks[0].TA1[0]); err != nil || r.Status != StatusAccepted || r.Control != ic.Header.Control {
					t.Errorf("TA1 %+v %v", r, err)
				}
			}
		})
	}
}

func TestParseFunctionalAckRejectsMalformed(t *testing.T) {
	for _, body := range [][]Segment{
		{Seg("AK2", "850", "0001"), Seg("AK5", "A"), Seg("AK9", "A", "1", "1", "1")},
		{Seg("AK1", "PO", "1"), Seg("AK2", "850", "0001"), Seg("AK9", "A", "1", "1", "1")},
		{Seg("AK1", "PO", "1"), Seg("AK9", "Q", "1", "1", "1")},
		{Seg("AK1", "PO", "1"), Seg("BEG", "00")},
	} {
		_, err := ParseFunctionalAck(&Set{ID: "997", Control: "0001", Segments: body})
		if !errors.Is(err, ErrBadAck) {
			t.Errorf("%v: err %v, want ErrBadAck", body, err)
		}
	}
	if _, err := ParseTA1(Seg("TA1", "000000001", "261204", "1030", "Z", "000")); !errors.Is(err, ErrBadAck) {
		t.Errorf("TA1 with status Z: %v", err)
	}
}

func TestTA1WhenRequested(t *testing.T) {
	data, _ := os.ReadFile("testdata/850_004010_retailer.x12")
	ics, _ := ReadAll(strings.NewReader(strings.Replace(string(data), "*000000101*0*P*", "*000000101*1*P*", 1)))
	if !NeedsTA1(ics[0]) || !bytes.Contains(ackBytes(t, ics[0]), []byte("TA1*000000101*261204*1030*A*000~")) {
		t.Error("ISA14=1 did not produce a TA1 A 000")
	}
	ics, _ = ReadAll(bytes.NewReader(data))
	if NeedsTA1(ics[0]) {
		t.Error("ISA14=0 on a good interchange asks for a TA1")
	}
	ics, _ = ReadAll(strings.NewReader(strings.Replace(string(data), "*000000101*0*P*", "*000000101*0*Q*", 1)))
	if st, note := InterchangeStatus(ics[0]); st != StatusWithErrors || note != NoteBadUsage || ics[0].Err != nil {
		t.Errorf("ISA15 Q: %s %s %v, want E 020 and not refused", st, note, ics[0].Err)
	}
}
