package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Delivery state (see DESIGN.md): one cursor per destination, dead letters by id and
// replays by id.
var (
	prefixCursor     = []byte("dc/") // + destination -> DeliveryCursorRecord
	prefixDeadLetter = []byte("dl/") // + id -> DeadLetter
	prefixReplay     = []byte("rp/") // + id -> ReplayRecord
	// + u16BE(len)+destination + id -> empty, for dead letters in state RETRYING: what
	// the delivery engine polls, without reading every dead letter.
	prefixRetrying = []byte("dlr/")
)

func cursorKey(dest string) []byte   { return cat(prefixCursor, []byte(dest)) }
func deadLetterKey(id string) []byte { return cat(prefixDeadLetter, []byte(id)) }
func replayKey(id string) []byte     { return cat(prefixReplay, []byte(id)) }

func retryingPrefix(dest string) []byte {
	return binary.BigEndian.AppendUint16(append([]byte(nil), prefixRetrying...), uint16(len(dest))) // dest is at most maxKeyPart
}

func retryingKey(dest, id string) []byte {
	return cat(retryingPrefix(dest), []byte(dest), []byte(id))
}

// setRetrying keeps the RETRYING index in step with a dead letter's state.
func (tx *applyTxn) setRetrying(d *storev1.DeadLetter) error {
	k := retryingKey(d.GetDestination(), d.GetId())
	if d.GetState() == storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING {
		return tx.set(k, nil)
	}
	if err := tx.txn.Delete(k); err != nil {
		return fmt.Errorf("ledger: delete %q: %w", k, err)
	}
	return nil
}

// Limits of delivery records, so that no command can make an Apply unbounded.
const (
	// MaxDeadLetterAttempts is how many attempts a dead letter keeps (the newest).
	MaxDeadLetterAttempts = 50
	// MaxDeadLetterPayload is the largest payload kept in a dead letter.
	MaxDeadLetterPayload = 256 << 10
)

// DeadLetterID is the deterministic id of the dead letter for (destination, route, seq),
// so a new leader dead-lettering the same message again replaces the record.
func DeadLetterID(destination, route string, seq uint64) string {
	sum := sha256.Sum256([]byte(destination + "\x00" + route + "\x00" + strconv.FormatUint(seq, 10)))
	return "dl_" + hex.EncodeToString(sum[:10])
}

func validName(s string) bool { return s != "" && len(s) <= maxKeyPart }

// applyAdvanceCursors moves cursors forward (never back) and records replay progress.
func applyAdvanceCursors(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.AdvanceCursors
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	for _, c := range m.GetCursors() {
		if !validName(c.GetDestination()) {
			return fmt.Errorf("%w: destination must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
		}
	}
	for _, r := range m.GetReplays() {
		if !validName(r.GetId()) {
			return fmt.Errorf("%w: replay id must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
		}
	}
	for _, c := range m.GetCursors() {
		rec := &storev1.DeliveryCursorRecord{}
		if _, err := tx.getProto(cursorKey(c.GetDestination()), rec); err != nil {
			return nil, err
		}
		rec.Destination = c.GetDestination()
		rec.Seq = max(rec.GetSeq(), c.GetSeq())
		rec.Delivered += c.GetDelivered()
		rec.DeadLettered += c.GetDeadLettered()
		rec.Coalesced += c.GetCoalesced()
		rec.UpdatedAt = timestamppb.New(tx.appendedAt)
		if err := tx.setProto(cursorKey(c.GetDestination()), rec); err != nil {
			return nil, err
		}
	}
	for _, p := range m.GetReplays() {
		rec := &storev1.ReplayRecord{}
		ok, err := tx.getProto(replayKey(p.GetId()), rec)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // progress of a replay this ledger never started: nothing to update
		}
		rec.NextSeq = max(rec.GetNextSeq(), p.GetNextSeq())
		rec.Sent += p.GetSent()
		rec.DeadLettered += p.GetDeadLettered()
		rec.Done = rec.GetDone() || p.GetDone()
		if err := tx.setProto(replayKey(p.GetId()), rec); err != nil {
			return nil, err
		}
	}
	if len(m.GetReplays()) > 0 {
		tx.newEvents = true // wake progress watchers
	}
	return nil, nil
}

// applyPutDeadLetters stores dead letters, keeping earlier attempts of the same id.
func applyPutDeadLetters(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.PutDeadLetters
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	for _, d := range m.GetDeadLetters() {
		if !validName(d.GetId()) || !validName(d.GetDestination()) {
			return fmt.Errorf("%w: dead letter id and destination must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
		}
	}
	for _, d := range m.GetDeadLetters() {
		prev := &storev1.DeadLetter{}
		ok, err := tx.getProto(deadLetterKey(d.GetId()), prev)
		if err != nil {
			return nil, err
		}
		d = proto.Clone(d).(*storev1.DeadLetter)
		if ok {
			d.Attempts = append(prev.GetAttempts(), d.GetAttempts()...)
			d.CreatedAt = prev.GetCreatedAt()
		} else {
			d.CreatedAt = timestamppb.New(tx.appendedAt)
		}
		if n := len(d.Attempts); n > MaxDeadLetterAttempts {
			d.Attempts = d.Attempts[n-MaxDeadLetterAttempts:]
		}
		if len(d.Payload) > MaxDeadLetterPayload {
			d.Payload = d.Payload[:MaxDeadLetterPayload]
		}
		d.State = storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN
		d.UpdatedAt = timestamppb.New(tx.appendedAt)
		if err := tx.setProto(deadLetterKey(d.GetId()), d); err != nil {
			return nil, err
		}
		if ok {
			if err := tx.setRetrying(d); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// applyResolveDeadLetters moves dead letters to RETRYING or DELIVERED.
func applyResolveDeadLetters(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.ResolveDeadLetters
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	st := m.GetState()
	if st != storev1.DeadLetterState_DEAD_LETTER_STATE_RETRYING && st != storev1.DeadLetterState_DEAD_LETTER_STATE_DELIVERED {
		return &storev1.ResolveDeadLettersResult{Error: fmt.Sprintf("state %s cannot be set by a resolve", st)}, nil
	}
	ids := m.GetIds()
	if len(ids) == 0 && m.GetDestination() != "" {
		// Every open dead letter of the destination, in key order (deterministic).
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefixDeadLetter
		it := tx.txn.NewIterator(opts)
		for it.Rewind(); it.Valid(); it.Next() {
			d := &storev1.DeadLetter{}
			if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, d) }); err != nil {
				it.Close()
				return nil, fmt.Errorf("ledger: decode dead letter %q: %w", it.Item().Key(), err)
			}
			if d.GetDestination() == m.GetDestination() && d.GetState() == storev1.DeadLetterState_DEAD_LETTER_STATE_OPEN {
				ids = append(ids, d.GetId())
			}
		}
		it.Close()
	}
	var n uint32
	for _, id := range ids {
		if !validName(id) {
			continue
		}
		d := &storev1.DeadLetter{}
		ok, err := tx.getProto(deadLetterKey(id), d)
		if err != nil {
			return nil, err
		}
		if !ok || d.GetState() == st || d.GetState() == storev1.DeadLetterState_DEAD_LETTER_STATE_DELIVERED {
			continue
		}
		d.State = st
		d.UpdatedAt = timestamppb.New(tx.appendedAt)
		if err := tx.setProto(deadLetterKey(id), d); err != nil {
			return nil, err
		}
		if err := tx.setRetrying(d); err != nil {
			return nil, err
		}
		n++
	}
	if n > 0 {
		tx.newEvents = true // wake the delivery engine
	}
	return &storev1.ResolveDeadLettersResult{Resolved: n}, nil
}

// applyStartReplay records a replay; a second one with the same id is ignored.
func applyStartReplay(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var m storev1.StartReplay
	if err := decodePayload(cmd, &m); err != nil {
		return nil, err
	}
	if !validName(m.GetId()) || !validName(m.GetDestination()) || !validName(m.GetRoute()) {
		return fmt.Errorf("%w: replay id, route and destination must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
	}
	if m.GetFromSeq() == 0 || m.GetToSeq() < m.GetFromSeq() {
		return fmt.Errorf("%w: replay range [%d, %d] is empty", ErrInvalidCommand, m.GetFromSeq(), m.GetToSeq()), nil
	}
	ok, err := tx.getProto(replayKey(m.GetId()), &storev1.ReplayRecord{})
	if err != nil || ok {
		return nil, err
	}
	if err := tx.setProto(replayKey(m.GetId()), &storev1.ReplayRecord{Replay: &m, NextSeq: m.GetFromSeq()}); err != nil {
		return nil, err
	}
	tx.newEvents = true // wake the delivery engine
	return nil, nil
}

// DeliveryCursor returns a destination's cursor; ok is false before its first advance.
func (l *Ledger) DeliveryCursor(dest string) (*storev1.DeliveryCursorRecord, bool, error) {
	rec := &storev1.DeliveryCursorRecord{}
	ok, err := l.getProto(cursorKey(dest), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// DeliveryCursors returns every destination's cursor, sorted by destination.
func (l *Ledger) DeliveryCursors() ([]*storev1.DeliveryCursorRecord, error) {
	return listProtos(l, prefixCursor, func() *storev1.DeliveryCursorRecord { return &storev1.DeliveryCursorRecord{} })
}

// DeadLetter returns one dead letter.
func (l *Ledger) DeadLetter(id string) (*storev1.DeadLetter, bool, error) {
	rec := &storev1.DeadLetter{}
	ok, err := l.getProto(deadLetterKey(id), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// DeadLetterFilter selects dead letters; every set field must match.
type DeadLetterFilter struct {
	Destination string
	Route       string
	Keys        map[string]string
	// ErrorContains is a case-insensitive substring of the error.
	ErrorContains string
	// States to include; all states when empty.
	States []storev1.DeadLetterState
}

func (f DeadLetterFilter) match(d *storev1.DeadLetter) bool {
	if f.Destination != "" && d.GetDestination() != f.Destination {
		return false
	}
	if f.Route != "" && d.GetRoute() != f.Route {
		return false
	}
	for k, v := range f.Keys {
		if got, ok := d.GetKeys()[k]; !ok || got != v {
			return false
		}
	}
	if f.ErrorContains != "" && !strings.Contains(strings.ToLower(d.GetError()), strings.ToLower(f.ErrorContains)) {
		return false
	}
	return len(f.States) == 0 || slices.Contains(f.States, d.GetState())
}

// DeadLetters returns the dead letters matching f, oldest event first (by seq, then id).
func (l *Ledger) DeadLetters(f DeadLetterFilter) ([]*storev1.DeadLetter, error) {
	all, err := listProtos(l, prefixDeadLetter, func() *storev1.DeadLetter { return &storev1.DeadLetter{} })
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, d := range all {
		if f.match(d) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *storev1.DeadLetter) int {
		if a.GetSeq() != b.GetSeq() {
			if a.GetSeq() < b.GetSeq() {
				return -1
			}
			return 1
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	return out, nil
}

// RetryingDeadLetters returns the dead letters of dest an operator asked to retry
// (state RETRYING), by id.
func (l *Ledger) RetryingDeadLetters(dest string) ([]*storev1.DeadLetter, error) {
	var out []*storev1.DeadLetter
	if !validName(dest) {
		return nil, nil
	}
	prefix := cat(retryingPrefix(dest), []byte(dest))
	err := l.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix, opts.PrefetchValues = prefix, false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(prefix):])
			d := &storev1.DeadLetter{}
			ok, err := getProto(txn, deadLetterKey(id), d)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("ledger: retry index names dead letter %q, which is missing", id)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// Replay returns one replay.
func (l *Ledger) Replay(id string) (*storev1.ReplayRecord, bool, error) {
	rec := &storev1.ReplayRecord{}
	ok, err := l.getProto(replayKey(id), rec)
	if !ok {
		rec = nil
	}
	return rec, ok, err
}

// Replays returns every replay, sorted by id.
func (l *Ledger) Replays() ([]*storev1.ReplayRecord, error) {
	return listProtos(l, prefixReplay, func() *storev1.ReplayRecord { return &storev1.ReplayRecord{} })
}

// SeqAtTime returns the seq of the first event committed at or after t, or LastSeq()+1
// when there is none. Commit times never decrease with seq (the leader's append times),
// so it is a binary search over seqs, each timed by the chunk at or before it: with
// retention, seqs in a removed range take the time of an earlier chunk, so the answer
// is the first event held at or after t (or a seq below every chunk held, when t is
// older than the earliest event held).
func (l *Ledger) SeqAtTime(t time.Time) (uint64, error) {
	var out uint64
	err := l.viewLog(func(txn *logTxn) error {
		last, err := getU64(txn.Txn, keySeq)
		if err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: prefixLog})
		defer it.Close()
		lo, hi := uint64(1), last+1 // answer in [lo, hi]
		for lo < hi {
			mid := lo + (hi-lo)/2
			before := true // no chunk at or before mid: older than anything held
			it.Seek(logKey(mid))
			if it.ValidForPrefix(prefixLog) {
				var at time.Time
				err := txn.chunkValue(it.Item(), func(v []byte) error {
					var err error
					at, err = chunkCommittedAt(v)
					return err
				})
				if err != nil {
					return fmt.Errorf("ledger: log chunk %d: %w", seqSuffix(it.Item().Key()), err)
				}
				before = at.Before(t)
			}
			if before {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		out = lo
		return nil
	})
	return out, err
}

func listProtos[T proto.Message](l *Ledger, prefix []byte, mk func() T) ([]T, error) {
	var out []T
	err := l.view(func(txn *badger.Txn) error {
		return scanProtos(txn, prefix, mk, func(m T) { out = append(out, m) })
	})
	return out, err
}

// scanProtos decodes every value under prefix, in key order, and hands it to fn.
func scanProtos[T proto.Message](txn *badger.Txn, prefix []byte, mk func() T, fn func(T)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		m := mk()
		if err := it.Item().Value(func(b []byte) error { return proto.Unmarshal(b, m) }); err != nil {
			return fmt.Errorf("ledger: decode %q: %w", it.Item().Key(), err)
		}
		fn(m)
	}
	return nil
}
