package store

import (
	"sort"
	"sync"

	"github.com/hashicorp/raft"
)

// logSize counts the bytes of entry data in the raft log, as the store writes and
// truncates it (splitAppends), so the log can be bounded in bytes as well as in
// entries (logbound.go). It keeps one mark per write: the cumulative bytes stored up to
// and including that write's last index. Sizes inside a write are taken as even, which
// is exact enough for a bound: a write is at most maxAppendBytes.
type logSize struct {
	mu    sync.Mutex
	base  logMark   // the cumulative bytes before the log's first entry
	marks []logMark // ascending by index, all above base.index
}

// logMark is the cumulative bytes of entry data stored up to and including index.
type logMark struct{ index, bytes uint64 }

// estimate seeds the count with the entries already in the log at open: their number
// times the average size of up to samples of them, read back from the store.
func (l *logSize) estimate(s raft.LogStore, samples int) error {
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil || last == 0 || last < first {
		return err
	}
	n := last - first + 1
	step := max(n/uint64(samples), 1)
	var read, bytes uint64
	for i := first; i <= last; i += step {
		var e raft.Log
		if err := s.GetLog(i, &e); err != nil {
			return err
		}
		read++
		bytes += uint64(len(e.Data))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.base = logMark{index: first - 1}
	l.marks = []logMark{{index: last, bytes: bytes * n / read}}
	return nil
}

// stored records a write of entries up to index last holding n bytes of data.
func (l *logSize) stored(last, n uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.marks = append(l.marks, logMark{index: last, bytes: l.lastMark().bytes + n})
}

// deleted records DeleteRange(min, max): raft removes a prefix after a snapshot, a
// follower a conflicting suffix, and a restore the whole log.
func (l *logSize) deleted(min, max uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if min <= l.base.index+1 { // a prefix, or everything
		if max >= l.lastMark().index {
			l.base, l.marks = l.lastMark(), l.marks[:0]
			l.base.index = max
			return
		}
		l.base = logMark{index: max, bytes: l.cumAt(max)}
		i := sort.Search(len(l.marks), func(i int) bool { return l.marks[i].index > max })
		l.marks = append(l.marks[:0], l.marks[i:]...)
		return
	}
	cut := logMark{index: min - 1, bytes: l.cumAt(min - 1)}
	i := sort.Search(len(l.marks), func(i int) bool { return l.marks[i].index >= min })
	l.marks = append(l.marks[:i], cut)
}

// total is the bytes of entry data in the log now.
func (l *logSize) total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastMark().bytes - l.base.bytes
}

// after is the bytes of entry data in the log after index i.
func (l *logSize) after(i uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastMark().bytes - l.cumAt(max(i, l.base.index))
}

// trailing is how many of the newest entries hold at most maxBytes of data together
// (counted by whole writes, so it may be a write's entries fewer).
func (l *logSize) trailing(maxBytes uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	last := l.lastMark()
	for i := len(l.marks) - 1; i >= 0; i-- {
		prev := l.base
		if i > 0 {
			prev = l.marks[i-1]
		}
		if last.bytes-prev.bytes > maxBytes {
			return last.index - l.marks[i].index
		}
	}
	return last.index - l.base.index
}

func (l *logSize) lastMark() logMark {
	if len(l.marks) == 0 {
		return l.base
	}
	return l.marks[len(l.marks)-1]
}

// cumAt is the cumulative bytes up to and including index i (base.index <= i), taking
// the entries of one write as even.
func (l *logSize) cumAt(i uint64) uint64 {
	k := sort.Search(len(l.marks), func(k int) bool { return l.marks[k].index >= i })
	if k == len(l.marks) {
		return l.lastMark().bytes
	}
	m, prev := l.marks[k], l.base
	if k > 0 {
		prev = l.marks[k-1]
	}
	switch {
	case m.index == i:
		return m.bytes
	case i <= prev.index:
		return prev.bytes
	}
	return prev.bytes + (m.bytes-prev.bytes)*(i-prev.index)/(m.index-prev.index)
}
