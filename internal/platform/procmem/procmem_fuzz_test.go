package procmem

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
)

// FuzzParse checks Parse against a plain reference parser of the same format: each of
// RssAnon, VmHWM and VmRSS must appear as "Name: <n> kB" (the last one counts), other
// lines are ignored. Parse accepts exactly what the reference accepts, with the same
// figures, and its figures written back as a status parse to themselves.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("VmHWM:\t1 kB\nVmRSS:\t2 kB\nRssAnon:\t3 kB\n"))
	f.Add([]byte("VmHWM:\t1 kB\nVmRSS:\t2 kB\nVmRSS:\t3 kB\n"))
	f.Add([]byte("VmHWM:\t1 MB\nVmRSS:\t2 kB\nRssAnon:\t3 kB\n"))
	f.Add([]byte("VmHWM: 18446744073709551616 kB\r\nVmRSS:\t2 kB\r\nRssAnon:\t3 kB\r\n"))
	f.Fuzz(func(t *testing.T, status []byte) {
		if len(status) > 60000 {
			return // bufio.Scanner's line limit is Parse's own rule; keep the reference simple
		}
		got, err := Parse(status)
		want, ok := reference(status)
		if (err == nil) != ok {
			t.Fatalf("Parse(%q) = %+v, %v; the reference accepts: %v (%+v)", status, got, err, ok, want)
		}
		if err != nil {
			return
		}
		if got != want {
			t.Fatalf("Parse(%q) = %+v, want %+v", status, got, want)
		}
		back := fmt.Sprintf("VmHWM:\t%d kB\nVmRSS:\t%d kB\nRssAnon:\t%d kB\n", got.VmHWMKB, got.VmRSSKB, got.RssAnonKB)
		if again, err := Parse([]byte(back)); err != nil || again != got {
			t.Fatalf("Parse of its own figures %q = %+v, %v; want %+v", back, again, err, got)
		}
	})
}

// reference parses the three figures line by line, independently of Parse.
func reference(status []byte) (Stats, bool) {
	var s Stats
	seen := map[string]bool{}
	for _, ln := range bytes.Split(status, []byte("\n")) {
		f := bytes.Fields(ln)
		if len(f) < 2 {
			continue
		}
		var p *uint64
		switch string(f[0]) {
		case "RssAnon:":
			p = &s.RssAnonKB
		case "VmHWM:":
			p = &s.VmHWMKB
		case "VmRSS:":
			p = &s.VmRSSKB
		default:
			continue
		}
		if len(f) != 3 || string(f[2]) != "kB" {
			return Stats{}, false
		}
		n, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return Stats{}, false
		}
		*p = n
		seen[string(f[0])] = true
	}
	return s, len(seen) == 3
}
