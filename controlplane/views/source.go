package views

import (
	"time"

	"github.com/crossdock/crossdock/controlplane/ledger"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// Source is what the views read: a node's committed log. The views never write to it
// and never run inside Raft's Apply: they read what Apply committed, after it.
type Source interface {
	// Base calls fn with the compacted base of a pruned log (for each of types, the
	// newest event per (type, keys) that is no longer in the log) and returns the
	// first seq the log still holds, from which the views then read. A log that was
	// never pruned has no base: Base returns 1 without calling fn.
	Base(types []string, fn func(ev *eventv1.CommittedEvent) error) (from uint64, err error)
	// ScanRaw calls fn for each committed event with seq >= from in ascending order,
	// at most max events (ledger.Ledger.ScanRaw), and returns the seq after the last.
	ScanRaw(from uint64, max int, fn func(ev ledger.RawEvent) error) (next uint64, err error)
	// LastSeq is the highest committed seq.
	LastSeq() uint64
	// Restores changes when the log was replaced by a snapshot restore
	// (ledger.Ledger.Restores).
	Restores() uint64
	// Changed is closed after the next apply that commits events (ledger.Ledger.Changed).
	Changed() <-chan struct{}
}

// LedgerSource is the Source of a node's ledger.
type LedgerSource struct {
	L *ledger.Ledger
	// Types are the event types the reader folds (the views' Types when nil): ScanRaw
	// refuses to read below their low-water mark, since the reader would miss pruned
	// events of those types, and only below theirs (another reader keeps other types).
	Types []string
}

func (s LedgerSource) types() []string {
	if s.Types == nil {
		return Types
	}
	return s.Types
}

// Base hands out the compacted base of a pruned ledger (ledger.ScanCompacted) and
// returns the seq from which the log still holds every event of the types (1 when
// none was pruned). The cutoff is read before the base: a prune in between only adds
// to the base, and the next ScanRaw sees the newer cutoff and starts again.
func (s LedgerSource) Base(types []string, fn func(ev *eventv1.CommittedEvent) error) (uint64, error) {
	from, _, err := s.L.TypesLowWater(types)
	if err != nil {
		return 0, err
	}
	if from <= 1 {
		return 1, nil
	}
	if err := s.L.ScanCompacted(types, fn); err != nil {
		return 0, err
	}
	return from, nil
}

// ScanRaw reads the ledger's log without decoding events.
// Asked below the cutoff of the source's types (a prune overtook a reader that lagged
// behind it) it returns the ledger's *PrunedError: the reader merges Base and goes on.
// The cutoff is read with the scan's own transaction (ledger.ScanRawTypes).
func (s LedgerSource) ScanRaw(from uint64, max int, fn func(ev ledger.RawEvent) error) (uint64, error) {
	return s.L.ScanRawTypes(s.types(), from, max, fn)
}

// TypesLowWater is the ledger's earliest seq from which it holds every event of types.
func (s LedgerSource) TypesLowWater(types []string) (uint64, time.Time, error) {
	return s.L.TypesLowWater(types)
}

// CompactedHolds reports whether the ledger's compacted base holds an event of typ
// with keys.
func (s LedgerSource) CompactedHolds(typ string, keys map[string]string) (bool, error) {
	return s.L.CompactedHolds(typ, keys)
}

// LastSeq is the ledger's highest committed seq.
func (s LedgerSource) LastSeq() uint64 { return s.L.LastSeq() }

// Restores is the ledger's count of snapshot restores.
func (s LedgerSource) Restores() uint64 { return s.L.Restores() }

// Changed is the ledger's apply notification.
func (s LedgerSource) Changed() <-chan struct{} { return s.L.Changed() }
