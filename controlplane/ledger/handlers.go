package ledger

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// applyIngestBatch commits a batch of one agent's events in order. An event is a
// duplicate (skipped, counted) if its agent_seq is at or below the agent's committed
// seq, or its id is already in the ledger or earlier in the batch; a duplicate still
// raises committed_seq, so the agent may drop it from its outbox. Each new event gets
// the next global seq.
//
// If the next event would overrun the apply budget, or is larger than MaxEventBytes,
// the batch stops there: the rest is not committed, committed_seq says how far it got,
// and the agent sends the rest again. Batches within MaxBatchEvents and MaxBatchBytes of
// canonically valid events never stop early. A batch without a usable agent id (empty
// or over 1 KiB) commits nothing.
func applyIngestBatch(tx *applyTxn, cmd *storev1.Command) (any, error) {
	agent, events, err := parseIngestBatch(cmd.GetPayload())
	if err != nil {
		return nil, fmt.Errorf("ledger: decode %s payload: %w", cmd.GetType(), err)
	}
	res := &storev1.IngestResult{}
	// Keep room for flushing the key index lists and pending ids in this transaction.
	tx.charge(len(tx.post.pend.lists)+tx.post.pend.idCount, tx.post.pend.size+tx.post.pend.idSize)
	if agent == "" || len(agent) > maxKeyPart {
		res.LastLedgerSeq = tx.lastSeq
		return res, nil
	}
	rec := &storev1.AgentRecord{}
	ok, err := tx.getProto(agentKey(agent), rec)
	if err != nil {
		return nil, err
	}
	if !ok {
		rec = &storev1.AgentRecord{Id: agent, EnrolledAt: timestamppb.New(tx.appendedAt)}
	}
	w := &chunkWriter{tx: tx, agent: agent, committedAt: timestamppb.New(tx.appendedAt)}
	tx.post.ids = make(map[string]uint64, len(events)) // also what this batch committed
	w.remaining = len(cmd.GetPayload())
	// The events' id keys and their filter hashes first, so the filter's blocks are
	// read together (idFilter.warm).
	iks := make([][]byte, len(events))
	hs := make([]uint64, len(events))
	for i := range events {
		if ik := idKey(events[i].id); ik != nil {
			iks[i], hs[i] = ik, tx.ids.hash(ik)
		}
	}
	tx.ids.warm(hs)
	for i := range events {
		ie := &events[i]
		dup := ie.agentSeq <= rec.GetCommittedSeq()
		ik := iks[i]
		if !dup && ik != nil {
			if _, seen := tx.post.ids[string(ik)]; seen {
				dup = true
			} else {
				_, ok, err := tx.post.pend.idSeqHash(tx.txn, ik, hs[i])
				if err != nil {
					return nil, fmt.Errorf("ledger: look up event id: %w", err)
				}
				dup = ok
			}
		}
		if dup {
			res.Duplicates++
			rec.CommittedSeq = max(rec.CommittedSeq, ie.agentSeq)
			continue
		}
		seq := tx.lastSeq + 1
		ok, err := w.add(seq, ie, ik)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if ik != nil {
			tx.post.addID(ik, seq)
			if tx.ids.addHash(hs[i]) {
				tx.idsFull = true
			}
		}
		tx.lastSeq = seq
		tx.newEvents = true
		res.Committed++
		rec.CommittedSeq = max(rec.CommittedSeq, ie.agentSeq)
	}
	if err := w.close(); err != nil {
		return nil, err
	}
	if tx.post.due(tx.lastSeq) {
		if err := tx.post.flush(tx, tx.lastSeq); err != nil {
			return nil, err
		}
		tx.postFlush = true
	}
	rec.EventsCommitted += uint64(res.Committed)
	rec.Duplicates += uint64(res.Duplicates)
	if err := tx.setProto(agentKey(agent), rec); err != nil {
		return nil, err
	}
	if res.Committed > 0 {
		if err := tx.set(keySeq, u64(tx.lastSeq)); err != nil {
			return nil, err
		}
	}
	res.CommittedSeq = rec.GetCommittedSeq()
	res.LastLedgerSeq = tx.lastSeq
	return res, nil
}

// applyPutToken stores a new enrollment token. An id that exists is refused so that a
// used token can never be reset.
func applyPutToken(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var t storev1.PutToken
	if err := decodePayload(cmd, &t); err != nil {
		return nil, err
	}
	if t.GetId() == "" || len(t.GetId()) > maxKeyPart {
		return fmt.Errorf("%w: token id must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
	}
	k := tokenKey(t.GetId())
	if _, ok, err := getValue(tx.txn, k); err != nil {
		return nil, fmt.Errorf("ledger: read token: %w", err)
	} else if ok {
		return fmt.Errorf("%w: %s", ErrTokenExists, t.GetId()), nil
	}
	return nil, tx.setProto(k, &storev1.TokenRecord{Token: &t})
}

// applyConsumeToken checks an enrollment token and marks it used. The secret is checked
// before use and expiry, so a caller without the secret learns only that it is wrong.
func applyConsumeToken(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var c storev1.ConsumeToken
	if err := decodePayload(cmd, &c); err != nil {
		return nil, err
	}
	refuse := func(err error) (any, error) {
		return &storev1.ConsumeTokenResult{Error: err.Error()}, nil
	}
	at := tx.appendedAt
	if c.GetAt() != nil {
		at = c.GetAt().AsTime()
	}
	if c.GetId() == "" || len(c.GetId()) > maxKeyPart {
		return refuse(ErrTokenNotFound)
	}
	k := tokenKey(c.GetId())
	rec := &storev1.TokenRecord{}
	ok, err := tx.getProto(k, rec)
	if err != nil {
		return nil, err
	}
	if !ok {
		return refuse(ErrTokenNotFound)
	}
	tok := rec.GetToken()
	want := tok.GetSecretSha256()
	if len(want) == 0 || subtle.ConstantTimeCompare(want, c.GetSecretSha256()) != 1 {
		return refuse(ErrTokenSecret)
	}
	if rec.GetUsed() {
		who := "agent"
		if tok.GetKind() == "server" {
			who = "node"
		}
		return refuse(fmt.Errorf("%w by %s %s at %s", ErrTokenUsed, who, rec.GetUsedBy(), formatTime(rec.GetUsedAt().AsTime())))
	}
	if exp := tok.GetExpiresAt(); exp != nil && !at.Before(exp.AsTime()) {
		return refuse(fmt.Errorf("%w at %s", ErrTokenExpired, formatTime(exp.AsTime())))
	}

	agentID := tok.GetAgentName()
	if agentID == "" {
		agentID = c.GetAgentName()
	}
	if agentID == "" {
		agentID = "agent-" + c.GetId()
	}
	if len(agentID) > maxKeyPart {
		return refuse(fmt.Errorf("%w: agent name longer than %d bytes", ErrInvalidCommand, maxKeyPart))
	}
	atpb := timestamppb.New(at)
	rec.Used, rec.UsedBy, rec.UsedAt = true, agentID, atpb
	if err := tx.setProto(k, rec); err != nil {
		return nil, err
	}
	if tok.GetKind() == "server" {
		return &storev1.ConsumeTokenResult{AgentId: agentID}, nil // a node, not an agent
	}
	// Re-enrolling an agent keeps its counters: its outbox seqs continue.
	agent := &storev1.AgentRecord{}
	if _, err := tx.getProto(agentKey(agentID), agent); err != nil {
		return nil, err
	}
	agent.Id, agent.EnrolledAt = agentID, atpb
	if err := tx.setProto(agentKey(agentID), agent); err != nil {
		return nil, err
	}
	return &storev1.ConsumeTokenResult{AgentId: agentID}, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// applyPutAdminToken stores (or replaces) the hash of an admin token.
func applyPutAdminToken(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var t storev1.PutAdminToken
	if err := decodePayload(cmd, &t); err != nil {
		return nil, err
	}
	if t.GetId() == "" || len(t.GetId()) > maxKeyPart {
		return fmt.Errorf("%w: admin token id must be 1 to %d bytes", ErrInvalidCommand, maxKeyPart), nil
	}
	return nil, tx.setProto(adminTokenKey(t.GetId()), &t)
}

// applyPutCA stores the cluster CA the first time; later ones are refused.
func applyPutCA(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var ca storev1.PutCA
	if err := decodePayload(cmd, &ca); err != nil {
		return nil, err
	}
	if _, ok, err := getValue(tx.txn, keyCA); err != nil {
		return nil, fmt.Errorf("ledger: read CA: %w", err)
	} else if ok {
		return ErrCAExists, nil
	}
	return nil, tx.setProto(keyCA, &ca)
}

// ConsumeTokenError returns nil if r enrolled an agent, else an error with r's message
// that wraps the matching sentinel (ErrTokenNotFound, ErrTokenUsed, ErrTokenExpired,
// ErrTokenSecret or ErrInvalidCommand).
func ConsumeTokenError(r *storev1.ConsumeTokenResult) error {
	msg := r.GetError()
	if msg == "" {
		return nil
	}
	for _, s := range []error{ErrTokenNotFound, ErrTokenUsed, ErrTokenExpired, ErrTokenSecret, ErrInvalidCommand} {
		if strings.HasPrefix(msg, s.Error()) {
			return &resultError{msg: msg, sentinel: s}
		}
	}
	return errors.New(msg)
}

type resultError struct {
	msg      string
	sentinel error
}

func (e *resultError) Error() string { return e.msg }
func (e *resultError) Unwrap() error { return e.sentinel }
