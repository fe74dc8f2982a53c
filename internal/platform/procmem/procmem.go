// Package procmem reads the process's memory figures from /proc/self/status (Linux)
// and tracks their peaks over time with a Sampler.
//
// RssAnon is the resident anonymous memory (Go heap, stacks, malloc'd memory): the
// figure to budget, since file-backed pages (mmapped Badger tables and logs,
// RssFile) can be dropped by the kernel under pressure. VmHWM is the peak total
// resident set (anonymous + file + shmem) as the kernel records it.
package procmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Stats are memory figures in KiB, as /proc/self/status reports them.
type Stats struct {
	RssAnonKB uint64 // resident anonymous memory
	VmHWMKB   uint64 // peak resident set size ("high water mark")
	VmRSSKB   uint64 // current resident set size
}

// StatusPath is the file Read parses.
const StatusPath = "/proc/self/status"

// Read returns the current figures of this process.
func Read() (Stats, error) { return ReadPath(StatusPath) }

// ReadPID returns the current figures of another process.
func ReadPID(pid int) (Stats, error) { return ReadPath(fmt.Sprintf("/proc/%d/status", pid)) }

// ReadPath parses a /proc/<pid>/status file.
func ReadPath(path string) (Stats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stats{}, fmt.Errorf("procmem: %w", err)
	}
	return Parse(b)
}

// Parse extracts the figures from the contents of a /proc/<pid>/status file. It
// fails if one of them is missing.
func Parse(status []byte) (Stats, error) {
	var s Stats
	fields := map[string]*uint64{"RssAnon:": &s.RssAnonKB, "VmHWM:": &s.VmHWMKB, "VmRSS:": &s.VmRSSKB}
	found := map[string]bool{} // a repeated line must not stand in for a missing one
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 {
			continue
		}
		p, ok := fields[string(f[0])]
		if !ok {
			continue
		}
		if len(f) != 3 || string(f[2]) != "kB" {
			return Stats{}, fmt.Errorf("procmem: unexpected line %q", sc.Text())
		}
		n, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return Stats{}, fmt.Errorf("procmem: line %q: %w", sc.Text(), err)
		}
		*p = n
		found[string(f[0])] = true
	}
	if err := sc.Err(); err != nil {
		return Stats{}, fmt.Errorf("procmem: %w", err)
	}
	if len(found) != len(fields) {
		return Stats{}, fmt.Errorf("procmem: status lacks RssAnon, VmHWM or VmRSS")
	}
	return s, nil
}

// MB converts KiB to MiB.
func MB(kb uint64) float64 { return float64(kb) / 1024 }

// Sampler reads the figures periodically and keeps the peak of each.
type Sampler struct {
	path    string
	mu      sync.Mutex
	peak    Stats
	last    Stats
	samples int
	err     error
	stop    chan struct{}
	done    chan struct{}
}

// StartSampler samples every interval (and once immediately) until Stop.
func StartSampler(interval time.Duration) *Sampler { return startSampler(StatusPath, interval) }

// StartSamplerPID samples another process, e.g. an agent started by a load program.
func StartSamplerPID(pid int, interval time.Duration) *Sampler {
	return startSampler(fmt.Sprintf("/proc/%d/status", pid), interval)
}

func startSampler(path string, interval time.Duration) *Sampler {
	s := &Sampler{path: path, stop: make(chan struct{}), done: make(chan struct{})}
	s.Sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.Sample()
			}
		}
	}()
	return s
}

// Sample takes one reading now and returns it.
func (s *Sampler) Sample() Stats {
	cur, err := ReadPath(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
		return Stats{}
	}
	s.samples++
	s.last = cur
	s.peak.RssAnonKB = max(s.peak.RssAnonKB, cur.RssAnonKB)
	s.peak.VmHWMKB = max(s.peak.VmHWMKB, cur.VmHWMKB)
	s.peak.VmRSSKB = max(s.peak.VmRSSKB, cur.VmRSSKB)
	return cur
}

// Peak returns the highest value of each figure seen so far (each maximum on its
// own, possibly from different samples).
func (s *Sampler) Peak() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Last returns the latest successful reading.
func (s *Sampler) Last() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// ResetPeak starts a new peak window from the latest reading. VmHWM itself is kept
// by the kernel and is not reset.
func (s *Sampler) ResetPeak() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peak = s.last
}

// Samples returns how many readings succeeded and the last read error, if any.
func (s *Sampler) Samples() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.err
}

// Stop ends the periodic sampling, takes a last reading and returns the peaks.
// Calling it more than once is fine.
func (s *Sampler) Stop() Stats {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.Sample()
	return s.Peak()
}
