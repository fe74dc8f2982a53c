package ledger

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Limits of one IngestBatch. The uplink enforces them before proposing; with events
// that pass canonical validation (at most 16 keys, ids of 128 bytes) a batch within
// them always fits the apply budget, so it is committed whole.
const (
	// MaxBatchEvents is the most events one IngestBatch may carry.
	MaxBatchEvents = 5000
	// MaxBatchBytes is the largest encoded IngestBatch (proto.Size) the uplink proposes.
	MaxBatchBytes = 4 << 20
	// MaxEventBytes is the largest committed event (the encoded CommittedEvent, about
	// 60 bytes more than the Event). A batch stops before a larger event. It is Badger's
	// largest value in memory, so in-memory and on-disk ledgers agree.
	MaxEventBytes = 1 << 20
	// MaxIndexedKeys is how many business keys of one event are indexed (the first in
	// name order); the event itself is stored whole.
	MaxIndexedKeys = 64
)

// The apply budget bounds the writes of one Apply, counted the way Badger counts a
// transaction (key + value + 12 bytes per write). It is a constant of this package, not
// of Badger's options, so every node truncates an oversized batch at the same event.
// Badger is sized (memTableSize) so that a transaction within the budget always fits.
const (
	applyBudgetBytes   = 16 << 20
	applyBudgetEntries = 150_000
	writeOverhead      = 12
)

// handler applies one command inside tx. It returns the command's result, or an error
// only when the node must stop (undecodable payload, storage failure).
type handler func(tx *applyTxn, cmd *storev1.Command) (any, error)

// handlers is the dispatch table: every command type this build knows.
var handlers = map[storev1.CommandType]handler{
	storev1.CommandType_COMMAND_TYPE_INGEST_BATCH:    applyIngestBatch,
	storev1.CommandType_COMMAND_TYPE_PUT_TOKEN:       applyPutToken,
	storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN:   applyConsumeToken,
	storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_TOKEN: applyPutAdminToken,
	storev1.CommandType_COMMAND_TYPE_PUT_CA:          applyPutCA,
	storev1.CommandType_COMMAND_TYPE_PUT_NODE:        applyPutNode,
	storev1.CommandType_COMMAND_TYPE_REMOVE_NODE:     applyRemoveNode,
	storev1.CommandType_COMMAND_TYPE_PUT_DOCUMENT:    applyPutDocuments,
	storev1.CommandType_COMMAND_TYPE_DELETE_DOCUMENT: applyDeleteDocuments,
	// Delivery state (delivery.go).
	storev1.CommandType_COMMAND_TYPE_ADVANCE_CURSORS:      applyAdvanceCursors,
	storev1.CommandType_COMMAND_TYPE_PUT_DEAD_LETTERS:     applyPutDeadLetters,
	storev1.CommandType_COMMAND_TYPE_RESOLVE_DEAD_LETTERS: applyResolveDeadLetters,
	storev1.CommandType_COMMAND_TYPE_START_REPLAY:         applyStartReplay,

	storev1.CommandType_COMMAND_TYPE_PUT_AGENT_CERT: applyPutAgentCert,
	storev1.CommandType_COMMAND_TYPE_BIND_AGENT:     applyBindAgent,
	storev1.CommandType_COMMAND_TYPE_REVOKE_AGENT:   applyRevokeAgent,

	storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER: applyPruneLedger, // prune.go
	// Partner API keys, quota leases and usage (partner.go).
	storev1.CommandType_COMMAND_TYPE_PUT_PARTNER_KEY:       applyPutPartnerKey,
	storev1.CommandType_COMMAND_TYPE_ROTATE_PARTNER_KEY:    applyRotatePartnerKey,
	storev1.CommandType_COMMAND_TYPE_REVOKE_PARTNER_KEY:    applyRevokePartnerKey,
	storev1.CommandType_COMMAND_TYPE_LEASE_QUOTA:           applyLeaseQuota,
	storev1.CommandType_COMMAND_TYPE_RETURN_QUOTA:          applyReturnQuota,
	storev1.CommandType_COMMAND_TYPE_RECORD_PARTNER_USAGE:  applyRecordPartnerUsage,
	storev1.CommandType_COMMAND_TYPE_SUBMIT_PARTNER_EVENTS: applySubmitPartnerEvents, // orders.go
	// Alert state (alerts.go).
	storev1.CommandType_COMMAND_TYPE_PUT_ALERT_STATES:        applyPutAlertStates,
	storev1.CommandType_COMMAND_TYPE_MARK_ALERTS_NOTIFIED:    applyMarkAlertsNotified,
	storev1.CommandType_COMMAND_TYPE_SET_AGENT_LABELS:        applySetAgentLabels,        // fleet.go
	storev1.CommandType_COMMAND_TYPE_PUT_ADMIN_CREDENTIAL:    applyPutAdminCredential,    // access.go
	storev1.CommandType_COMMAND_TYPE_REVOKE_ADMIN_CREDENTIAL: applyRevokeAdminCredential, // access.go
	storev1.CommandType_COMMAND_TYPE_RECORD_AUDIT:            applyRecordAudit,           // access.go
	storev1.CommandType_COMMAND_TYPE_PUT_RELEASE:             applyPutRelease,            // releases.go
	storev1.CommandType_COMMAND_TYPE_PUT_ROLLOUT:             applyPutRollout,            // releases.go
}

// applyTxn is one Apply's Badger transaction with its write budget.
type applyTxn struct {
	txn        *logTxn
	logger     *slog.Logger
	appendedAt time.Time
	bytes      int // budget used
	entries    int
	newEvents  bool // wake Changed waiters after commit
	lastSeq    uint64
	ids        *idFilter // the ledger-wide id filter; never nil
	idsFull    bool      // ids holds more than it was sized for: rebuild it larger
	post       *postingAdds
	postFlush  bool     // the key index lists were flushed through lastSeq
	archiver   Archiver // Options.Archiver: PRUNE_LEDGER hands it the events it removes
	index      uint64   // the raft index of the entry being applied
	segs       segDelta // l/ pointers written and removed, per segment
}

// fits reports whether writes of n entries totalling size bytes (keys + values) stay
// within the budget, keeping room for the writes every Apply makes at the end.
func (tx *applyTxn) fits(n, size int) bool {
	const reserveEntries, reserveBytes = 8, 4 << 10
	return tx.entries+n+reserveEntries <= applyBudgetEntries &&
		tx.bytes+size+n*writeOverhead+reserveBytes <= applyBudgetBytes
}

// charge counts n writes totalling size bytes (keys + values) against the budget.
func (tx *applyTxn) charge(n, size int) {
	tx.entries += n
	tx.bytes += size + n*writeOverhead
}

func (tx *applyTxn) set(k, v []byte) error {
	tx.charge(1, len(k)+len(v))
	return tx.put(k, v)
}

// put writes k = v without charging the budget: the caller charged it.
func (tx *applyTxn) put(k, v []byte) error {
	if err := tx.txn.Set(k, v); err != nil {
		return fmt.Errorf("ledger: write %q: %w", k, err)
	}
	return nil
}

// putChunk stores log chunk b under l/ first: its bytes in the active segment and a
// pointer in Badger (segments.go), without charging the budget: the caller charged the
// chunk's size, so where it is stored does not change what fits.
func (tx *applyTxn) putChunk(first uint64, b []byte) error {
	p, err := tx.txn.segs.append(first, b)
	if err != nil {
		return fmt.Errorf("ledger: log chunk %d: %w", first, err)
	}
	if err := tx.put(logKey(first), p.encode()); err != nil {
		return err
	}
	tx.segs.add(p, 1)
	return nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

func (tx *applyTxn) setProto(k []byte, m proto.Message) error {
	b, err := deterministic.Marshal(m)
	if err != nil {
		return fmt.Errorf("ledger: encode %T: %w", m, err)
	}
	return tx.set(k, b)
}

// getProto reads k into m; ok is false if k is absent.
func (tx *applyTxn) getProto(k []byte, m proto.Message) (ok bool, err error) {
	return getProto(tx.txn.Txn, k, m)
}

func getProto(txn *badger.Txn, k []byte, m proto.Message) (ok bool, err error) {
	it, err := txn.Get(k)
	if err == badger.ErrKeyNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ledger: read %q: %w", k, err)
	}
	err = it.Value(func(b []byte) error { return proto.Unmarshal(b, m) })
	if err != nil {
		return false, fmt.Errorf("ledger: decode %q: %w", k, err)
	}
	return true, nil
}

// decodePayload decodes cmd's payload into m. A failure is an Apply error: the entry
// was written by a leader that encoded it, so this node cannot trust its own state.
func decodePayload(cmd *storev1.Command, m proto.Message) error {
	if err := proto.Unmarshal(cmd.GetPayload(), m); err != nil {
		return fmt.Errorf("ledger: decode %s payload: %w", cmd.GetType(), err)
	}
	return nil
}

// Apply applies the command of Raft log entry index, appended by the leader at
// appendedAt, and returns its result.
//
// Contract:
//   - Deterministic: the result and the state depend only on the current state, index,
//     appendedAt and cmd (no clock, no randomness, no map iteration order), so every
//     node computes the same thing.
//   - Idempotent on replay: if index <= AppliedIndex() it does nothing and returns
//     (nil, nil), as Raft replays entries after a crash.
//   - Atomic: the handler's writes and the new applied index are one Badger
//     transaction. It is not fsynced; see Sync.
//   - An unknown type marked Ignorable only advances the applied index and returns
//     (nil, nil). An unknown type otherwise returns an error wrapping
//     ErrUnknownCommand, and the applied index does not move.
//   - A business refusal (a token already used, a second CA) is a result, not an
//     error, and the applied index advances. Errors (undecodable payload, storage
//     failure, unknown type) mean the node cannot follow the log and must stop.
//
// Results by type: INGEST_BATCH *storev1.IngestResult; CONSUME_TOKEN
// *storev1.ConsumeTokenResult; PUT_TOKEN, PUT_ADMIN_TOKEN and PUT_CA nil, or an error
// value (ErrTokenExists, ErrCAExists, ErrInvalidCommand) returned as the result.
func (l *Ledger) Apply(index uint64, appendedAt time.Time, cmd *storev1.Command) (any, error) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if cmd == nil {
		return nil, fmt.Errorf("ledger: entry %d: nil command", index)
	}
	h, err := l.acquire()
	if err != nil {
		return nil, err
	}
	defer l.release(h)
	if index <= l.applied.Load() {
		return nil, nil
	}
	fn, known := handlers[cmd.GetType()]
	if !known && !cmd.GetIgnorable() {
		return nil, fmt.Errorf("%w: %d (entry %d); this node is older than the leader", ErrUnknownCommand, cmd.GetType(), index)
	}

	tx := &applyTxn{txn: &logTxn{Txn: h.db.NewTransaction(true), segs: h.segs}, segs: segDelta{}, logger: l.logger, appendedAt: appendedAt.UTC(), lastSeq: l.lastSeq.Load(), ids: h.post.filter,
		post: &postingAdds{pend: h.post}, archiver: l.opts.Archiver, index: index}
	defer tx.txn.Discard()
	var res any
	if known {
		if res, err = fn(tx, cmd); err != nil {
			return nil, err
		}
	} else {
		l.logger.Warn("ledger: skipping ignorable command of unknown type", "type", int32(cmd.GetType()), "index", index)
	}
	if err := tx.set(keyApplied, u64(index)); err != nil {
		return nil, err
	}
	// Readers open their transaction and copy the pending key index lists under
	// h.post.mu, so the lists change together with the state they describe.
	h.post.mu.Lock()
	err = tx.txn.Commit()
	if err == nil {
		tx.post.commit(tx.postFlush, tx.lastSeq)
	}
	h.post.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("ledger: commit entry %d: %w", index, err)
	}
	if empty := h.segs.commit(tx.segs); len(empty) > 0 {
		l.retireSegments(h, empty)
	}
	if cmd.GetType() == storev1.CommandType_COMMAND_TYPE_PRUNE_LEDGER {
		// Where chunks are stored is this node's own (segments.go): a failure here
		// leaves them where they were, and the next prune tries again.
		if err := l.relocate(h); err != nil {
			l.logger.Warn("ledger: move chunks out of sparse segments", "err", err)
		}
	}
	l.lastSeq.Store(tx.lastSeq)
	l.applied.Store(index)
	l.growFilter(h, tx.idsFull || (tx.post.dropRuns > 0 && h.post.filterStale()))
	if tx.newEvents {
		l.notify()
	}
	return res, nil
}
