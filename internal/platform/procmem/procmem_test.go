package procmem

import "testing"

const sample = `Name:	outboxbench
Umask:	0022
State:	R (running)
VmPeak:	 1308064 kB
VmSize:	 1308064 kB
VmHWM:	   40200 kB
VmRSS:	   38100 kB
RssAnon:	   21312 kB
RssFile:	   16788 kB
RssShmem:	       0 kB
Threads:	7
`

func TestParse(t *testing.T) {
	s, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{RssAnonKB: 21312, VmHWMKB: 40200, VmRSSKB: 38100}
	if s != want {
		t.Fatalf("Parse = %+v, want %+v", s, want)
	}
	if _, err := Parse([]byte("Name:\tx\nVmRSS:\t1 kB\n")); err == nil {
		t.Fatal("Parse of a status without RssAnon succeeded")
	}
	if _, err := Parse([]byte("VmHWM:\t1 kB\nVmRSS:\tx kB\nRssAnon:\t1 kB\n")); err == nil {
		t.Fatal("Parse of a malformed number succeeded")
	}
}
