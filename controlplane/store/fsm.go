package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/wire"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// fsm is the thin raft.FSM wrapper: it decodes log entries and hands them to the ledger,
// which owns the state and the command handlers.
type fsm struct {
	ledger  *ledger.Ledger
	logger  *slog.Logger
	onApply func(took, sinceProposed time.Duration) // Config.OnApply
	// snapCtx and snapLimit throttle raft snapshots (Config.SnapshotRate); snapCtx
	// ends when the store closes, so a throttled snapshot does not hold up shutdown.
	snapCtx   context.Context
	snapLimit *rate.Limiter
	// snap is the snapshot this node is taking now (raft takes one at a time).
	snap atomic.Pointer[ledger.Snapshot]
	// snapIndex is the index of the newest snapshot this node took or restored.
	snapIndex atomic.Uint64
}

// snapshotting reports whether this node is taking a snapshot of its ledger now.
func (f *fsm) snapshotting() bool { return f.snap.Load() != nil }

// unthrottle lifts the rate limit from the snapshot being taken (the next one is
// throttled again); it reports whether it lifted one.
func (f *fsm) unthrottle() bool {
	snap := f.snap.Load()
	if f.snapLimit == nil || snap == nil || snap.Unthrottled() {
		return false
	}
	snap.Unthrottle()
	return true
}

var _ raft.FSM = (*fsm)(nil)

// Apply decodes one entry and applies it. An entry that cannot be decoded, a command type
// this node does not know (and that is not marked ignorable) or a storage failure stops
// the node: carrying on would make this replica diverge from the others.
func (f *fsm) Apply(l *raft.Log) any {
	res, err := f.apply(l)
	if err != nil {
		panic(err.Error())
	}
	return res
}

// apply is Apply with its failures returned: entries that are not commands are
// skipped, a command is decoded and applied to the ledger. Raft's Apply panics on the
// error; catchUpFromLog (store.go) returns it from Open.
func (f *fsm) apply(l *raft.Log) (any, error) {
	if l.Type != raft.LogCommand {
		return nil, nil
	}
	var cmd storev1.Command
	if err := wire.DecodeCommand(l.Data, &cmd); err != nil {
		return nil, fmt.Errorf("store: cannot decode raft log entry %d: %w", l.Index, err)
	}
	start := time.Now()
	proposed := time.Unix(0, cmd.GetProposedAtUnixNano()).UTC()
	res, err := f.ledger.Apply(l.Index, proposed, &cmd)
	if f.onApply != nil {
		end := time.Now()
		f.onApply(end.Sub(start), end.Sub(proposed))
	}
	if err != nil {
		if errors.Is(err, ledger.ErrUnknownCommand) {
			return nil, fmt.Errorf("store: raft log entry %d has command type %d this node does not know; upgrade this node: %w", l.Index, cmd.GetType(), err)
		}
		return nil, fmt.Errorf("store: applying raft log entry %d (%s): %w", l.Index, cmd.GetType(), err)
	}
	return res, nil
}

// Snapshot makes the ledger durable up to the current index, so the stored applied index
// is never behind the last command a raft snapshot holds, and takes a point-in-time view
// of it.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.ledger.Sync(); err != nil {
		return nil, fmt.Errorf("store: sync ledger before snapshot: %w", err)
	}
	snap, err := f.ledger.OpenSnapshot()
	if err != nil {
		return nil, fmt.Errorf("store: open ledger snapshot: %w", err)
	}
	if f.snapLimit != nil {
		snap.Throttle(f.snapCtx, f.snapLimit)
	}
	f.snap.Store(snap)
	return &fsmSnapshot{snap: snap, f: f}, nil
}

// Restore replaces the ledger with a snapshot stream.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.ledger.Restore(rc); err != nil {
		return fmt.Errorf("store: restore ledger: %w", err)
	}
	f.snapIndex.Store(f.ledger.AppliedIndex())
	f.logger.Info("restored ledger from snapshot", "applied_index", f.ledger.AppliedIndex(), "last_seq", f.ledger.LastSeq())
	return nil
}

type fsmSnapshot struct {
	snap *ledger.Snapshot
	f    *fsm
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.snap.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("store: close snapshot: %w", err)
	}
	s.f.snapIndex.Store(s.snap.Index())
	return nil
}

func (s *fsmSnapshot) Release() {
	s.snap.Release()
	s.f.snap.CompareAndSwap(s.snap, nil)
}
