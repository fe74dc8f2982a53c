//go:build linux

package procmem

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

func TestReadAndSampler(t *testing.T) {
	s, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if s.RssAnonKB == 0 || s.VmRSSKB < s.RssAnonKB || s.VmHWMKB < s.VmRSSKB {
		t.Fatalf("implausible figures %+v", s)
	}
	sm := StartSampler(time.Millisecond)
	// A fresh anonymous mapping, so the growth is certain (a Go slice could reuse
	// heap memory that is already resident).
	buf, err := syscall.Mmap(-1, 0, 64<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(buf)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := sm.Samples(); n >= 3 || time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	peak := sm.Stop()
	if n, err := sm.Samples(); n < 2 || err != nil {
		t.Fatalf("samples = %d, err = %v", n, err)
	}
	if peak.RssAnonKB < s.RssAnonKB+48<<10 {
		t.Fatalf("peak RssAnon %d kB does not include the 64 MiB mapping (start %d kB)", peak.RssAnonKB, s.RssAnonKB)
	}
	sm.Stop()
}
