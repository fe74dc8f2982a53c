// Package store runs the control plane's replicated state: hashicorp/raft with a
// raft-wal log, and a Badger-backed ledger as the FSM.
//
// The ledger is persistent, so raft is told not to restore a snapshot at start
// (NoSnapshotRestoreOnStart). The ledger stores its last applied index in the same
// Badger transaction as each apply and skips entries at or below it when raft replays
// the log. It syncs Badger before every raft snapshot, so its applied index is behind
// the newest snapshot's only by entries that are not commands, or if its files were
// lost; Open catches it up from the raft log, or restores the snapshot when the log no
// longer holds the entries between (catchUpFromSnapshot).
package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/platform/slogh"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Errors returned by the store.
var (
	// ErrNotLeader means this node cannot accept writes; LeaderAddr says who can.
	ErrNotLeader = errors.New("store: this node is not the raft leader")
	// ErrClosed means the store has been shut down.
	ErrClosed = errors.New("store: closed")
)

// Config configures a Store.
type Config struct {
	// NodeID names this node in the raft configuration.
	NodeID string
	// Admit, when set, is asked before this node proposes a command that takes in new
	// events (admitted); its error refuses the command. The control plane's disk guard
	// refuses them while a node is short of disk.
	Admit func() error
	// Dir holds raft/ (the log), snapshots/ and ledger/.
	Dir string
	// RaftBind is the address raft listens on ("127.0.0.1:0" picks a port).
	RaftBind string
	// RaftAdvertise is the address other nodes dial; RaftBind's when empty.
	RaftAdvertise string
	// StreamLayer, when set, carries raft traffic (e.g. mutual TLS) instead of plain TCP.
	StreamLayer raft.StreamLayer
	// Bootstrap makes this node a single-voter cluster when it has no raft state yet.
	Bootstrap bool
	// Logger receives raft's and the store's logs.
	Logger *slog.Logger
	// CheckLedger, when set, sees the ledger once it is open and before raft starts;
	// an error stops Open (the control plane refuses a copied data dir with it).
	CheckLedger func(*ledger.Ledger) error
	// Archiver receives the events ledger retention removes (ledger.Options.Archiver);
	// nil archives nothing.
	Archiver ledger.Archiver
	// OnApply, when set, is told how long each command entry's Apply took and how long
	// after the leader proposed it it was applied here (metrics; must be cheap).
	OnApply func(took, sinceProposed time.Duration)

	// Raft timings; raft's defaults when zero. Tests use short ones.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot trigger one
	// (DefaultSnapshotThreshold when 0). SnapshotInterval is how often raft checks
	// (DefaultSnapshotInterval when 0).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries stay in the log after a snapshot
	// (DefaultTrailingLogs when 0).
	TrailingLogs uint64
	// TrailingBytes lowers TrailingLogs to the newest entries holding at most this
	// many bytes, and SnapshotBytes makes a snapshot due once this many bytes were
	// written to the log since the last one (logbound.go; DefaultTrailingBytes and
	// DefaultSnapshotBytes when 0, negative: the log is bounded in entries only).
	TrailingBytes int64
	SnapshotBytes int64
	// MaxAppendEntries is the most entries raft groups into one disk write (group
	// commit) and one AppendEntries (DefaultMaxAppendEntries when 0). raft-wal's write
	// buffer grows to the largest group, rounded up to a power of two, so this bounds
	// it: at most MaxAppendEntries × the entry size (batches of up to 4 MiB).
	MaxAppendEntries int
	// SnapshotRate is how fast a raft snapshot reads the ledger, in bytes a second of
	// the stream before compression (DefaultSnapshotRate when 0; negative: as fast as
	// it can). `crossdock snapshot save` is not throttled.
	SnapshotRate int64
	// WALSegmentSize is the raft-wal segment file size (default 64 MiB). The log is
	// truncated a whole segment at a time; tests use small segments to see truncation.
	WALSegmentSize int
}

// Store is one control plane node's replicated state.
type Store struct {
	cfg    Config
	logger *slog.Logger
	raft   *raft.Raft
	ledger *ledger.Ledger
	wal    *raftwal.WAL
	meta   *metadb.BoltMetaDB
	trans  raft.Transport
	snaps  raft.SnapshotStore
	peers  peerHealth // the leader's view of its followers (peers.go)
	fsm    *fsm
	// catchUp is what Open did to bring the ledger up to the newest raft snapshot.
	catchUp catchUp
	// logSize counts the bytes in the raft log (logbound.go).
	logSize logSize
	// stopSnap ends the wait of a throttled snapshot, so Close is not held up by it.
	stopSnap context.CancelFunc
	// stopHold ends boundLog (logbound.go); holdDone is closed when it has.
	stopHold context.CancelFunc
	holdDone chan struct{}
}

// Open starts raft and the ledger. With Bootstrap set and no existing state it forms a
// single-node cluster.
func Open(cfg Config) (*Store, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("store: NodeID is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node", cfg.NodeID)
	for _, d := range []string{"raft", "snapshots", "ledger"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("store: create data dir: %w", err)
		}
	}
	hlog := slogh.New(logger, "raft", hclog.Warn)

	s := &Store{cfg: cfg, logger: logger}
	var err error
	ledgerOpts := ledger.Options{Dir: filepath.Join(cfg.Dir, "ledger"), Logger: logger, Archiver: cfg.Archiver}
	s.ledger, err = ledger.Open(ledgerOpts)
	if errors.Is(err, ledger.ErrSegmentDamaged) {
		// An OS crash or power loss lost log chunks written after the segments' last
		// sync, which the ledger's own files had already recorded. Everything since the
		// newest raft snapshot (taken after a sync) is still in the raft log, so the
		// ledger is rebuilt from them: emptied here, restored from the snapshot by
		// catchUpFromSnapshot, and the log replayed by raft.
		logger.Warn("ledger lost writes in an OS crash; rebuilding it from the newest raft snapshot and the raft log", "err", err)
		if err = os.RemoveAll(ledgerOpts.Dir); err == nil {
			s.ledger, err = ledger.Open(ledgerOpts)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: open ledger: %w", err)
	}
	// raft-wal's Close does not close its metadata DB (and so keeps its file lock); the
	// store owns the meta store and closes it itself.
	s.meta = &metadb.BoltMetaDB{}
	segSize := cfg.WALSegmentSize
	if segSize <= 0 {
		segSize = 64 << 20 // raft-wal's default
	}
	s.wal, err = raftwal.Open(filepath.Join(cfg.Dir, "raft"), raftwal.WithLogger(hlog.Named("wal")),
		raftwal.WithMetaStore(s.meta), raftwal.WithSegmentSize(segSize))
	if err != nil {
		s.ledger.Close()
		return nil, fmt.Errorf("store: open raft log: %w", err)
	}
	s.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), 2, hlog.Named("snapshots"))
	if err != nil {
		s.closeStorage()
		return nil, fmt.Errorf("store: open snapshot store: %w", err)
	}
	if err := s.catchUpFromSnapshot(); err != nil {
		s.closeStorage()
		return nil, err
	}
	if cfg.CheckLedger != nil {
		if err := cfg.CheckLedger(s.ledger); err != nil {
			s.closeStorage()
			return nil, err
		}
	}
	s.trans, err = newTransport(cfg, hlog)
	if err != nil {
		s.closeStorage()
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.NoSnapshotRestoreOnStart = true
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.CommitTimeout
	}
	rc.SnapshotThreshold, rc.SnapshotInterval, rc.TrailingLogs = DefaultSnapshotThreshold, DefaultSnapshotInterval, DefaultTrailingLogs
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	// Group commit: raft gathers concurrent Apply calls into one disk write and one
	// AppendEntries. Each entry is already a batch, so a group of 64 is tens of
	// thousands of events; larger groups only grew raft-wal's write buffer (it held
	// 10–110 MiB of the heap with 256).
	rc.MaxAppendEntries = DefaultMaxAppendEntries
	if cfg.MaxAppendEntries > 0 {
		rc.MaxAppendEntries = cfg.MaxAppendEntries
	}

	f := &fsm{ledger: s.ledger, logger: logger, onApply: cfg.OnApply}
	f.snapCtx, s.stopSnap = context.WithCancel(context.Background())
	if r := cmp.Or(cfg.SnapshotRate, DefaultSnapshotRate); r > 0 {
		f.snapLimit = ledger.NewSnapshotLimiter(r)
	}
	s.fsm = f
	if metas, err := s.snaps.List(); err == nil && len(metas) > 0 {
		f.snapIndex.Store(metas[0].Index)
	}
	if err := s.recoverFromPeersJSON(rc, f); err != nil {
		s.trans.(io.Closer).Close()
		s.closeStorage()
		return nil, err
	}
	// The newest entries stay in memory: a follower applies what it just stored and
	// the leader replicates what it just appended, without reading raft-wal back (about
	// 2% of each node's CPU under ingest). Entries are batches of up to 4 MiB.
	if err := s.logSize.estimate(s.wal, 16); err != nil {
		s.trans.(io.Closer).Close()
		s.closeStorage()
		return nil, fmt.Errorf("store: size of the raft log: %w", err)
	}
	logs, err := raft.NewLogCache(logCacheEntries, splitAppends{LogStore: s.wal, size: &s.logSize})
	if err != nil {
		s.trans.(io.Closer).Close()
		s.closeStorage()
		return nil, fmt.Errorf("store: raft log cache: %w", err)
	}
	s.raft, err = raft.NewRaft(rc, f, logs, s.wal, s.snaps, s.trans)
	if err != nil {
		s.trans.(io.Closer).Close()
		s.closeStorage()
		return nil, fmt.Errorf("store: start raft: %w", err)
	}
	s.peers.watch(s.raft)
	hctx, stopHold := context.WithCancel(context.Background())
	s.stopHold, s.holdDone = stopHold, make(chan struct{})
	bound := &logBound{
		hold:     joinHold{since: map[raft.ServerID]time.Time{}, now: time.Now},
		trailing: rc.TrailingLogs, threshold: rc.SnapshotThreshold,
		trailingBytes: byteBound(cfg.TrailingBytes, DefaultTrailingBytes),
		snapshotBytes: byteBound(cfg.SnapshotBytes, DefaultSnapshotBytes),
	}
	go func() {
		defer close(s.holdDone)
		s.boundLog(hctx, bound)
	}()
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(s.wal, s.wal, s.snaps)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("store: check raft state: %w", err)
		}
		if !has {
			f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: s.trans.LocalAddr(), Suffrage: raft.Voter,
			}}})
			if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				s.Close()
				return nil, fmt.Errorf("store: bootstrap cluster: %w", err)
			}
			logger.Info("bootstrapped a new cluster", "raft_addr", s.trans.LocalAddr())
		}
	}
	return s, nil
}

// catchUpFromSnapshot brings the ledger up to the newest raft snapshot when it is
// behind it. Raft will not do it: the store runs with NoSnapshotRestoreOnStart, and raft
// replays only the entries after the snapshot. The ledger is behind when its files were
// lost or replaced, or lost writes in an OS crash, and also, on every node, when the
// snapshot's last entries are not commands (a new leader's no-op, a barrier, a
// configuration change): raft counts those in the snapshot's index and the ledger
// never sees them. When the raft log still holds every entry between the two, the
// ledger applies the commands among them, as raft would have (none in the second
// case); only when it does not is the whole snapshot restored, which on a large ledger
// takes as long as a snapshot (docs/performance.md, seventeenth session).
func (s *Store) catchUpFromSnapshot() error {
	metas, err := s.snaps.List()
	if err != nil {
		return fmt.Errorf("store: list snapshots: %w", err)
	}
	if len(metas) == 0 || metas[0].Index <= s.ledger.AppliedIndex() {
		return nil
	}
	from, to := s.ledger.AppliedIndex()+1, metas[0].Index
	applied, ok, err := s.catchUpFromLog(from, to)
	if err != nil {
		return err
	}
	if ok {
		s.catchUp = catchUp{fromLog: true, commands: applied}
		s.logger.Info("ledger caught up with the newest raft snapshot from the raft log",
			"ledger_index", from-1, "snapshot_index", to, "commands_applied", applied)
		return nil
	}
	meta, rc, err := s.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("store: open snapshot %s: %w", metas[0].ID, err)
	}
	defer rc.Close()
	s.logger.Warn("ledger is behind the newest raft snapshot and the raft log no longer holds the entries between; restoring the snapshot",
		"ledger_index", s.ledger.AppliedIndex(), "snapshot_index", meta.Index)
	if err := s.ledger.Restore(rc); err != nil {
		return fmt.Errorf("store: restore snapshot %s: %w", meta.ID, err)
	}
	s.catchUp = catchUp{restored: true}
	return nil
}

// catchUp is what catchUpFromSnapshot did when the store opened (for tests).
type catchUp struct {
	fromLog  bool // the ledger applied the raft log's entries up to the snapshot
	commands int  // how many of them were commands
	restored bool // the snapshot was restored
}

// catchUpFromLog applies the commands among raft log entries from..to to the ledger,
// in order, as raft would have. ok is false when the log does not hold every one of
// them: nothing is applied when the log starts after from or ends before to, and when
// an entry inside is missing (the hole raft leaves at a restored backup's index) what
// was applied before it is replaced by the restore that follows.
func (s *Store) catchUpFromLog(from, to uint64) (applied int, ok bool, err error) {
	first, err := s.wal.FirstIndex()
	if err != nil {
		return 0, false, fmt.Errorf("store: first index of the raft log: %w", err)
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return 0, false, fmt.Errorf("store: last index of the raft log: %w", err)
	}
	if first == 0 || from < first || to > last {
		return 0, false, nil
	}
	f := &fsm{ledger: s.ledger, logger: s.logger}
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := s.wal.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return applied, false, nil
			}
			return applied, false, fmt.Errorf("store: read raft log entry %d to catch the ledger up: %w", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if _, err := f.apply(&l); err != nil {
			return applied, false, err
		}
		applied++
	}
	return applied, true, nil
}

// Raft snapshot settings (docs/operations.md, Raft snapshots and the raft log). A
// snapshot streams the whole ledger, zstd-compressed (with retention, only what
// retention keeps), and is taken every 8,192
// entries (an entry is one uplink batch of up to 5,000 events), checked every 2
// minutes. After it, 4,096 entries stay in the log, so a follower that was away for up
// to that many entries catches up from the log instead of receiving a snapshot. The log
// on disk holds at most threshold + trailing entries: at 5,000 events/s in batches of
// 100 that is about 4 minutes of log, so under retention a node's disk levels off soon
// after the first retention period (docs/performance.md, the soak).
const (
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultTrailingLogs      = 4096
	// DefaultSnapshotRate is Config.SnapshotRate's default: 16 MiB a second of the
	// uncompressed stream, about a sixth of a core reading and compressing it. A
	// snapshot of what a 5-minute retention keeps at 5,000 events/s (about 560 MiB)
	// takes some 35 s instead of 5 s of a full core on every node at once; a 26 GB
	// ledger takes about 28 minutes. Raise it (--raft-snapshot-rate) where nodes have
	// cores to spare and the ledger is large.
	DefaultSnapshotRate = 16 << 20
	// DefaultTrailingBytes and DefaultSnapshotBytes bound the raft log in bytes
	// (logbound.go): at most 256 MiB stay after a snapshot, and the next is due once
	// 512 MiB more were written, so the log holds about 768 MiB at most. With the
	// 256-byte events of the benchmarks in batches of 100 the entry counts above are
	// reached first (about 120 and 370 MiB of log); in batches of 1,000 these bytes are,
	// at about 2.7 million events of log.
	DefaultTrailingBytes = 256 << 20
	DefaultSnapshotBytes = 512 << 20
	// DefaultMaxAppendEntries is Config.MaxAppendEntries' default (raft's own).
	DefaultMaxAppendEntries = 64
)

// byteBound is a Config byte bound: def when 0, none (0) when negative.
func byteBound(v, def int64) uint64 {
	switch {
	case v == 0:
		return uint64(def)
	case v < 0:
		return 0
	}
	return uint64(v)
}

// logCacheEntries is how many of the newest raft entries are kept in memory.
const logCacheEntries = 32

// PeersFile is the manual recovery file: when <data-dir>/raft/peers.json exists at
// start, the node rewrites its raft configuration to the servers it lists (hashicorp
// raft's peers.json format) before starting, then renames the file so it is used once.
// It is how a cluster that lost quorum for good is brought back (docs/operations.md).
const PeersFile = "peers.json"

func (s *Store) recoverFromPeersJSON(rc *raft.Config, f raft.FSM) error {
	path := filepath.Join(s.cfg.Dir, "raft", PeersFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("store: read %s: %w", path, err)
	}
	if err := raft.RecoverCluster(rc, recoveryFSM{f}, s.wal, s.wal, s.snaps, s.trans, conf); err != nil {
		return fmt.Errorf("store: recover raft configuration from %s: %w", path, err)
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return fmt.Errorf("store: rename %s after recovery: %w", path, err)
	}
	s.logger.Warn("raft configuration recovered from peers.json", "servers", len(conf.Servers), "file", path+".applied")
	return nil
}

// recoveryFSM releases the snapshot raft.RecoverCluster takes: RecoverCluster persists
// it but never calls Release, and the ledger keeps a read transaction open until then.
type recoveryFSM struct{ raft.FSM }

func (r recoveryFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := r.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return &releasingSnapshot{FSMSnapshot: snap}, nil
}

type releasingSnapshot struct {
	raft.FSMSnapshot
	once sync.Once
}

func (s *releasingSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.FSMSnapshot.Persist(sink)
}

func (s *releasingSnapshot) Release() { s.once.Do(s.FSMSnapshot.Release) }

// maxRPCsInFlight turns raft's pipelined replication off: each AppendEntries to a
// follower waits for its answer before the next is sent. Raft v1.8.0's pipeline can
// deadlock: when a follower answers with a newer term or a refusal, the decoder stops
// reading, and a send that raced it waits forever for room in the pipeline, holding up
// that follower's replication for good (heartbeats still flow, so no election heals
// it) and the node's shutdown (a full make test hung in raft.Shutdown this way,
// 2026-12-06; grafana/pyroscope#5518 describes the same). Raft's own analysis (#541)
// found pipelining of little use with batched entries; bench/clusterbench measured
// the change (docs/performance.md).
const maxRPCsInFlight = 1

func newTransport(cfg Config, hlog hclog.Logger) (raft.Transport, error) {
	ncfg := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog.Named("transport"), MaxRPCsInFlight: maxRPCsInFlight}
	if cfg.StreamLayer != nil {
		ncfg.Stream = cfg.StreamLayer
		return raft.NewNetworkTransportWithConfig(ncfg), nil
	}
	bind := cfg.RaftBind
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	var adv net.Addr
	if cfg.RaftAdvertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
		if err != nil {
			return nil, fmt.Errorf("store: raft advertise address %q: %w", cfg.RaftAdvertise, err)
		}
		adv = a
	}
	t, err := raft.NewTCPTransportWithConfig(bind, adv, ncfg)
	if err != nil {
		return nil, fmt.Errorf("store: raft listen on %s: %w", bind, err)
	}
	return t, nil
}

func (s *Store) closeStorage() {
	if s.wal != nil {
		s.wal.Close()
		s.meta.Close()
	}
	if s.ledger != nil {
		s.ledger.Close()
	}
}

// Close shuts raft down and closes storage.
func (s *Store) Close() error {
	var errs []error
	if s.stopSnap != nil {
		s.stopSnap()
	}
	if s.stopHold != nil {
		s.stopHold()
		<-s.holdDone
	}
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("store: raft shutdown: %w", err))
		}
	}
	if c, ok := s.trans.(io.Closer); ok {
		c.Close()
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: close raft log: %w", err))
		}
		if err := s.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: close raft metadata: %w", err))
		}
	}
	if s.ledger != nil {
		if err := s.ledger.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: close ledger: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Ledger is the local replica's state, for reads. Reads on a follower may lag the leader.
func (s *Store) Ledger() *ledger.Ledger { return s.ledger }

// Raft exposes the raft instance for membership and status.
func (s *Store) Raft() *raft.Raft { return s.raft }

// NodeID is this node's raft id.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// RaftAddr is the address other nodes reach this node's raft on.
func (s *Store) RaftAddr() string { return string(s.trans.LocalAddr()) }

// IsLeader reports whether this node is the leader right now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the current leader's raft address and id, empty when unknown.
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// WaitForLeader blocks until some node is leader or ctx is done.
func (s *Store) WaitForLeader(ctx context.Context) error {
	return s.waitFor(ctx, func() bool { a, _ := s.Leader(); return a != "" })
}

// WaitForLeadership blocks until this node is leader and has applied every entry of
// previous terms (a barrier), or ctx is done.
func (s *Store) WaitForLeadership(ctx context.Context) error {
	if err := s.waitFor(ctx, s.IsLeader); err != nil {
		return err
	}
	return s.raft.Barrier(timeoutFrom(ctx)).Error()
}

func (s *Store) waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: waiting for raft leader: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Encode wraps msg in a Command envelope stamped with this node's clock.
func Encode(typ storev1.CommandType, msg proto.Message, now time.Time) ([]byte, error) {
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", typ, err)
	}
	return EncodePayload(typ, payload, now)
}

// EncodePayload is Encode for a payload that is already encoded.
func EncodePayload(typ storev1.CommandType, payload []byte, now time.Time) ([]byte, error) {
	b, err := proto.Marshal(&storev1.Command{Type: typ, Payload: payload, ProposedAtUnixNano: now.UnixNano()})
	if err != nil {
		return nil, fmt.Errorf("store: encode command: %w", err)
	}
	return b, nil
}

// ProposeAsync appends a command to the raft log and returns at once; the future's
// Response is the ledger's result. Futures complete in the order they were proposed,
// which is what keeps one agent's batches in order.
func (s *Store) ProposeAsync(typ storev1.CommandType, msg proto.Message, timeout time.Duration) (raft.ApplyFuture, error) {
	if err := s.admit(typ); err != nil {
		return nil, err
	}
	b, err := Encode(typ, msg, time.Now())
	if err != nil {
		return nil, err
	}
	return s.raft.Apply(b, timeout), nil
}

// ProposePayloadAsync is ProposeAsync for a payload that is already encoded (the
// uplink puts the agent's event bytes into an INGEST_BATCH as they came).
func (s *Store) ProposePayloadAsync(typ storev1.CommandType, payload []byte, timeout time.Duration) (raft.ApplyFuture, error) {
	if err := s.admit(typ); err != nil {
		return nil, err
	}
	b, err := EncodePayload(typ, payload, time.Now())
	if err != nil {
		return nil, err
	}
	return s.raft.Apply(b, timeout), nil
}

// admitted reports whether a command type takes in new events, and so goes through
// Config.Admit: an agent's batch or a partner's order. Commands that keep the cluster
// running (deliveries, retention, membership, admin) are always proposed.
func admitted(typ storev1.CommandType) bool {
	return typ == storev1.CommandType_COMMAND_TYPE_INGEST_BATCH || typ == storev1.CommandType_COMMAND_TYPE_SUBMIT_PARTNER_EVENTS
}

func (s *Store) admit(typ storev1.CommandType) error {
	if s.cfg.Admit == nil || !admitted(typ) {
		return nil
	}
	if err := s.cfg.Admit(); err != nil {
		return fmt.Errorf("store: %s refused: %w", typ, err)
	}
	return nil
}

// Propose appends a command and waits until it is committed and applied here.
func (s *Store) Propose(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error) {
	f, err := s.ProposeAsync(typ, msg, timeoutFrom(ctx))
	if err != nil {
		return nil, err
	}
	return Wait(f)
}

// ProposeIgnorable is Propose for a command marked Ignorable: a node of an older build
// (during a rolling upgrade) skips it instead of stopping. For state nothing else
// depends on (alerts, agent upgrades).
func (s *Store) ProposeIgnorable(ctx context.Context, typ storev1.CommandType, msg proto.Message) (any, error) {
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("store: encode %s: %w", typ, err)
	}
	b, err := proto.Marshal(&storev1.Command{Type: typ, Payload: payload, Ignorable: true, ProposedAtUnixNano: time.Now().UnixNano()})
	if err != nil {
		return nil, fmt.Errorf("store: encode command: %w", err)
	}
	return Wait(s.raft.Apply(b, timeoutFrom(ctx)))
}

// Wait waits for a future from ProposeAsync and maps raft's errors to the store's.
func Wait(f raft.ApplyFuture) (any, error) {
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("store: raft apply: %w", err)
	}
	return f.Response(), nil
}

func timeoutFrom(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return 30 * time.Second
}

// Snapshot asks raft for a snapshot now (log compaction); it returns when it is written.
func (s *Store) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	return nil
}

// ErrClusterMismatch means a backup was taken from another cluster than the one it is
// being restored into (or holds no cluster id); see ClusterMismatchError.
var ErrClusterMismatch = errors.New("store: the backup is not of this cluster")

// ClusterMismatchError is RestoreBackup's refusal of a backup of another cluster.
type ClusterMismatchError struct {
	// Live is this cluster's id; Backup the backup's, "" when it holds none.
	Live, Backup string
}

func (e *ClusterMismatchError) Error() string {
	if e.Backup == "" {
		return fmt.Sprintf("the backup holds no cluster id (it has no cluster CA: taken before its cluster was bootstrapped), and this is cluster %s", e.Live)
	}
	return fmt.Sprintf("the backup is of cluster %s, and this is cluster %s", e.Backup, e.Live)
}

func (e *ClusterMismatchError) Unwrap() error { return ErrClusterMismatch }

// RestoreOptions adjust RestoreBackup.
type RestoreOptions struct {
	// Force installs a backup of another cluster, or one without a cluster id: its
	// CA and admin tokens replace this cluster's.
	Force bool
}

// RestoreBackup installs a backup (a stream written by a ledger snapshot) as the state of
// the whole cluster through raft, which replicates it to every node. The whole file is
// verified first, so a corrupt backup is refused before anything changes, and so is a
// backup of another cluster (a *ClusterMismatchError) unless opts.Force. A cluster
// without a CA yet accepts any backup. It returns the raft index the backup was
// installed at.
func (s *Store) RestoreBackup(f *os.File, opts RestoreOptions) (uint64, error) {
	info, err := ledger.InspectSnapshot(f)
	if err != nil {
		return 0, fmt.Errorf("store: verify backup: %w", err)
	}
	live, ok, err := s.ledger.ClusterID()
	if err != nil {
		return 0, fmt.Errorf("store: read this cluster's id: %w", err)
	}
	if ok && info.ClusterID != live {
		if !opts.Force {
			return 0, &ClusterMismatchError{Live: live, Backup: info.ClusterID}
		}
		s.logger.Warn("installing a backup of another cluster (forced): its CA and admin tokens replace this cluster's",
			"cluster_id", live, "backup_cluster_id", info.ClusterID)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: stat backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("store: rewind backup: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: info.Index, Size: st.Size()}
	if err := s.raft.Restore(meta, f, 5*time.Minute); err != nil {
		// After a lost leadership the backup may or may not be installed; running the
		// restore again on the new leader is safe.
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return 0, fmt.Errorf("store: raft restore: %w", err)
	}
	return s.raft.AppliedIndex(), nil
}
