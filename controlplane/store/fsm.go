package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// fsm is the thin raft.FSM wrapper: it decodes log entries and hands them to the ledger,
// which owns the state and the command handlers.
type fsm struct {
	ledger *ledger.Ledger
	logger *slog.Logger
}

var _ raft.FSM = (*fsm)(nil)

// Apply decodes one entry and applies it. An entry that cannot be decoded, a command type
// this node does not know (and that is not marked ignorable) or a storage failure stops
// the node: carrying on would make this replica diverge from the others.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var cmd storev1.Command
	if err := decodeCommand(l.Data, &cmd); err != nil {
		panic(fmt.Sprintf("store: cannot decode raft log entry %d: %v", l.Index, err))
	}
	res, err := f.ledger.Apply(l.Index, time.Unix(0, cmd.GetProposedAtUnixNano()).UTC(), &cmd)
	if err != nil {
		if errors.Is(err, ledger.ErrUnknownCommand) {
			panic(fmt.Sprintf("store: raft log entry %d has command type %d this node does not know; upgrade this node: %v", l.Index, cmd.GetType(), err))
		}
		panic(fmt.Sprintf("store: applying raft log entry %d (%s): %v", l.Index, cmd.GetType(), err))
	}
	return res
}

// Snapshot makes the ledger durable up to the current index, so the stored applied index
// is never behind a Raft snapshot, and takes a point-in-time view of it.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.ledger.Sync(); err != nil {
		return nil, fmt.Errorf("store: sync ledger before snapshot: %w", err)
	}
	snap, err := f.ledger.OpenSnapshot()
	if err != nil {
		return nil, fmt.Errorf("store: open ledger snapshot: %w", err)
	}
	return &fsmSnapshot{snap: snap}, nil
}

// Restore replaces the ledger with a snapshot stream.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.ledger.Restore(rc); err != nil {
		return fmt.Errorf("store: restore ledger: %w", err)
	}
	f.logger.Info("restored ledger from snapshot", "applied_index", f.ledger.AppliedIndex(), "last_seq", f.ledger.LastSeq())
	return nil
}

type fsmSnapshot struct {
	snap *ledger.Snapshot
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.snap.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("store: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Release() }

// decodeCommand decodes a raft entry's Command like proto.Unmarshal, except that the
// payload aliases data instead of being copied: an ingest batch is ~150 KB, copied on
// every replica only to be read once. The ledger keeps no part of a payload past Apply
// (it copies the events it stores), and raft does not change an entry's Data. Anything
// but the usual encoding (known fields with their wire types) is left to proto.Unmarshal.
func decodeCommand(data []byte, cmd *storev1.Command) error {
	for p := data; len(p) > 0; {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return proto.Unmarshal(data, cmd)
		}
		p = p[n:]
		switch {
		case num == 3 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(p)
			if m < 0 {
				return proto.Unmarshal(data, cmd)
			}
			cmd.Payload = v[:len(v):len(v)]
			p = p[m:]
		case (num == 1 || num == 2 || num == 4) && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(p)
			if m < 0 {
				return proto.Unmarshal(data, cmd)
			}
			switch num {
			case 1:
				cmd.Type = storev1.CommandType(int32(x))
			case 2:
				cmd.Ignorable = protowire.DecodeBool(x)
			case 4:
				cmd.ProposedAtUnixNano = int64(x)
			}
			p = p[m:]
		default:
			return proto.Unmarshal(data, cmd) // resets cmd first
		}
	}
	return nil
}
