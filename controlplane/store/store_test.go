package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

func testConfig(t *testing.T, dir string) Config {
	return Config{
		NodeID: "n1", Dir: dir, RaftBind: "127.0.0.1:0", Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
}

func mustOpen(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForLeadership(ctx); err != nil {
		s.Close()
		t.Fatalf("leadership: %v", err)
	}
	return s
}

func batch(agent string, from, n int) *storev1.IngestBatch {
	b := &storev1.IngestBatch{AgentId: agent}
	for i := from; i < from+n; i++ {
		b.Events = append(b.Events, &storev1.AgentEvent{AgentSeq: uint64(i), Event: &eventv1.Event{
			Id: fmt.Sprintf("ev-%s-%d", agent, i), Type: "inventory.level",
			Keys:   map[string]string{"sku": fmt.Sprintf("SKU-%d", i%7), "location": "WH1"},
			Source: &eventv1.Source{Agent: agent, Connector: "t", Position: fmt.Sprint(i)},
			Payload: &eventv1.Event_InventoryLevel{InventoryLevel: &eventv1.InventoryLevel{
				Sku: fmt.Sprintf("SKU-%d", i%7), Location: "WH1", OnHand: fmt.Sprint(i),
			}},
		}})
	}
	return b
}

func ingest(t *testing.T, s *Store, b *storev1.IngestBatch) *storev1.IngestResult {
	t.Helper()
	res, err := s.Propose(context.Background(), storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, b)
	if err != nil {
		t.Fatalf("propose: %v", err)
	}
	r, ok := res.(*storev1.IngestResult)
	if !ok {
		t.Fatalf("result %T", res)
	}
	return r
}

// ingestBatches commits n batches of size events from agent, its seqs from 1 on.
func ingestBatches(t *testing.T, s *Store, agent string, n, size int) {
	t.Helper()
	for i := range n {
		ingest(t, s, batch(agent, 1+i*size, size))
	}
}

func hash(t *testing.T, s *Store) string {
	t.Helper()
	h, err := s.Ledger().Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestIngestDedupAndAck checks the ack carries the agent's committed seq and a re-sent
// batch is committed once.
func TestIngestDedupAndAck(t *testing.T) {
	s := mustOpen(t, testConfig(t, t.TempDir()))
	defer s.Close()
	r := ingest(t, s, batch("a1", 1, 100))
	if r.GetCommittedSeq() != 100 || r.GetCommitted() != 100 {
		t.Fatalf("first batch: %v", r)
	}
	r = ingest(t, s, batch("a1", 51, 100)) // half re-sent
	if r.GetCommittedSeq() != 150 || r.GetCommitted() != 50 {
		t.Fatalf("overlapping batch: %v", r)
	}
	if got := s.Ledger().LastSeq(); got != 150 {
		t.Fatalf("ledger has %d events, want 150", got)
	}
}

// TestRestartReplaysNothingTwice closes and reopens a node: raft replays its log into a
// ledger that already applied it, and nothing changes.
func TestRestartReplaysNothingTwice(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s := mustOpen(t, cfg)
	ingestBatches(t, s, "a1", 10, 50)
	before, idx := hash(t, s), s.Ledger().AppliedIndex()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := hash(t, s); got != before {
		t.Fatalf("state changed across restart: %s != %s", got, before)
	}
	if s.Ledger().AppliedIndex() < idx {
		t.Fatalf("applied index went back from %d to %d", idx, s.Ledger().AppliedIndex())
	}
	r := ingest(t, s, batch("a1", 501, 10))
	if r.GetCommittedSeq() != 510 || s.Ledger().LastSeq() != 510 {
		t.Fatalf("after restart: %v, last seq %d", r, s.Ledger().LastSeq())
	}
}

// TestSnapshotThenLostLedger takes a raft snapshot, writes more, then deletes the ledger
// files: the node must rebuild the same state from the snapshot plus the log, or, while
// the raft log still holds every entry, from the log alone.
func TestSnapshotThenLostLedger(t *testing.T) {
	lose := func(dir string) error { return os.RemoveAll(filepath.Join(dir, "ledger")) }
	t.Run("log truncated", func(t *testing.T) { rebuildsAfter(t, lose, true) })
	t.Run("log whole", func(t *testing.T) { rebuildsAfter(t, lose, false) })
}

// TestRestartAfterSnapshotEndingInNoCommand: a raft snapshot whose last entry is not a
// command (here a barrier; a new leader's no-op is another) has an index above the
// ledger's applied index. A restart must catch the ledger up from the raft log, applying
// nothing, instead of restoring the whole snapshot.
func TestRestartAfterSnapshotEndingInNoCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s := mustOpen(t, cfg)
	ingestBatches(t, s, "a1", 5, 100)
	if err := s.Raft().Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	metas, err := s.snaps.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("snapshots: %v, %v", metas, err)
	}
	want, idx := hash(t, s), s.Ledger().AppliedIndex()
	if metas[0].Index <= idx {
		t.Fatalf("snapshot index %d is not above the ledger's %d: the barrier made no entry", metas[0].Index, idx)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := (catchUp{fromLog: true}); s.catchUp != got {
		t.Fatalf("caught up with %+v, want %+v (from the log, no command applied, no restore)", s.catchUp, got)
	}
	if got := hash(t, s); got != want {
		t.Fatalf("state changed across restart: %s != %s", got, want)
	}
	if s.Ledger().AppliedIndex() != idx {
		t.Fatalf("applied index %d, want %d", s.Ledger().AppliedIndex(), idx)
	}
	if r := ingest(t, s, batch("a1", 501, 10)); r.GetCommittedSeq() != 510 || s.Ledger().LastSeq() != 510 {
		t.Fatalf("after restart: %v, last seq %d", r, s.Ledger().LastSeq())
	}
}

// TestSnapshotThenDamagedSegment: the newest segment of the ledger loses its tail (an
// OS crash after the ledger recorded chunks the segment had not synced): the node
// rebuilds the ledger from the newest raft snapshot and the raft log, and nothing is
// lost.
func TestSnapshotThenDamagedSegment(t *testing.T) {
	rebuildsAfter(t, func(dir string) error {
		segs, err := filepath.Glob(filepath.Join(dir, "ledger", "db-*", "segments", "*.seg"))
		if err != nil || len(segs) == 0 {
			return fmt.Errorf("no segment files: %v", err)
		}
		slices.Sort(segs)
		fi, err := os.Stat(segs[len(segs)-1])
		if err != nil {
			return err
		}
		return os.Truncate(segs[len(segs)-1], fi.Size()/2)
	}, true)
}

// rebuildsAfter takes a raft snapshot, writes more, closes the node, damages its data
// dir with damage and starts it again: it must hold the same state, rebuilt from the
// snapshot plus the log. With truncate, the snapshot truncates the raft log (one
// trailing entry), so the snapshot must be restored; without it the log holds every
// entry and the ledger is rebuilt from the log alone.
func rebuildsAfter(t *testing.T, damage func(dir string) error, truncate bool) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	if truncate {
		cfg.TrailingLogs = 1
	}
	s := mustOpen(t, cfg)
	ingestBatches(t, s, "a1", 5, 100)
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	ingestBatches(t, s, "a2", 3, 100)
	want := hash(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := damage(dir); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	defer s.Close()
	if s.catchUp.restored != truncate || s.catchUp.fromLog == truncate || (!truncate && s.catchUp.commands == 0) {
		t.Fatalf("caught up with %+v; want the snapshot restored: %v, else the log's commands applied", s.catchUp, truncate)
	}
	if got := hash(t, s); got != want {
		t.Fatalf("rebuilt state differs: %s != %s", got, want)
	}
	if s.Ledger().LastSeq() != 800 {
		t.Fatalf("last seq %d, want 800", s.Ledger().LastSeq())
	}
}

// TestRestoreBackup saves a backup, writes more, restores the backup through raft, and
// checks the state is the backup's and new writes continue after it.
func TestRestoreBackup(t *testing.T) {
	s := mustOpen(t, testConfig(t, t.TempDir()))
	defer s.Close()
	ingest(t, s, batch("a1", 1, 300))
	want := s.Ledger().LastSeq()
	f := backupOf(t, s)
	ingest(t, s, batch("a1", 301, 200))
	if _, err := s.RestoreBackup(f, RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := s.Ledger().LastSeq(); got != want {
		t.Fatalf("after restore last seq = %d, want %d", got, want)
	}
	r := ingest(t, s, batch("a1", 301, 10))
	if r.GetCommitted() != 10 || s.Ledger().LastSeq() != want+10 {
		t.Fatalf("writes after restore: %v, last seq %d", r, s.Ledger().LastSeq())
	}

	// A corrupt backup is refused and changes nothing.
	before := hash(t, s)
	bad, err := os.CreateTemp(t.TempDir(), "bad")
	if err != nil {
		t.Fatal(err)
	}
	bad.WriteString("CDXSNAP1 this is not a snapshot")
	bad.Seek(0, 0)
	if _, err := s.RestoreBackup(bad, RestoreOptions{}); err == nil {
		t.Fatal("a corrupt backup was accepted")
	}
	if hash(t, s) != before {
		t.Fatal("a refused backup changed the state")
	}
}

// TestRestartRightAfterRestoreBackup restarts a node right after it installed a backup,
// before any command: its ledger's applied index is the backup's, below entries of the
// replaced history. Open must not apply those from the raft log; it restores the
// installed snapshot, and the state is the backup's.
func TestRestartRightAfterRestoreBackup(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s := mustOpen(t, cfg)
	ingest(t, s, batch("a1", 1, 300))
	f := backupOf(t, s)
	ingestBatches(t, s, "a2", 4, 50)
	if _, err := s.RestoreBackup(f, RestoreOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	want := hash(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := hash(t, s); got != want || s.Ledger().LastSeq() != 300 {
		t.Fatalf("after the restart: hash %s (want the backup's %s), last seq %d (want 300)", got, want, s.Ledger().LastSeq())
	}
	if !s.catchUp.restored {
		t.Fatalf("caught up with %+v, want the installed backup restored", s.catchUp)
	}
}

// TestUnknownCommandIgnorable checks an ignorable command of an unknown type is skipped.
func TestUnknownCommandIgnorable(t *testing.T) {
	s := mustOpen(t, testConfig(t, t.TempDir()))
	defer s.Close()
	b, err := proto.Marshal(&storev1.Command{Type: storev1.CommandType(999), Ignorable: true})
	if err != nil {
		t.Fatal(err)
	}
	before := s.Ledger().AppliedIndex()
	if err := s.Raft().Apply(b, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if s.Ledger().AppliedIndex() <= before {
		t.Fatal("ignorable unknown command did not advance the applied index")
	}
}

// TestNoPipelinedReplication: the raft transport refuses pipelines, so replication
// sends one AppendEntries at a time (maxRPCsInFlight: raft's pipeline can deadlock).
func TestNoPipelinedReplication(t *testing.T) {
	s := mustOpen(t, testConfig(t, t.TempDir()))
	defer s.Close()
	p, err := s.trans.AppendEntriesPipeline("n2", s.trans.LocalAddr())
	if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("AppendEntriesPipeline: %v, want raft.ErrPipelineReplicationNotSupported", err)
	}
}
