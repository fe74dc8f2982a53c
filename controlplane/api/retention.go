package api

import (
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane/ledger"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// readError maps a ledger read error: events pruned by retention are OutOfRange (the
// message names the earliest seq and time still held), anything else Internal.
func readError(err error) error {
	if errors.Is(err, ledger.ErrPruned) {
		return connect.NewError(connect.CodeOutOfRange, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// checkHeld refuses a read from seq (asked as what, e.g. "--from 12") or from time t
// (non-zero) below the ledger's low-water mark.
func checkHeld(l *ledger.Ledger, seq uint64, t time.Time) error {
	low, at := l.LowWater()
	if low == 0 {
		return nil
	}
	if (seq > 0 && seq < low) || (!t.IsZero() && !at.IsZero() && t.Before(at)) {
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("%w: the ledger holds events from seq %d, committed at %s; earlier ones were pruned (replay them from the archive)",
			ledger.ErrPruned, low, at.UTC().Format(time.RFC3339Nano)))
	}
	return nil
}

// retentionStatus is what retention removed, for GetClusterStatus.
func retentionStatus(l *ledger.Ledger) *adminv1.LedgerRetention {
	out := &adminv1.LedgerRetention{EventsHeld: l.LastSeq()}
	lw, err := l.Retention()
	if err != nil || lw == nil {
		return out
	}
	out.LowWaterSeq, out.LowWaterAt = lw.GetSeq(), lw.GetAt()
	out.DedupSeq, out.DedupAt = lw.GetDedupSeq(), lw.GetDedupAt()
	out.EventsPruned = lw.GetEventsPruned()
	out.EventsHeld = l.LastSeq() - min(l.LastSeq(), lw.GetEventsPruned())
	out.LastPrune = lw.GetComputedAt()
	return out
}
