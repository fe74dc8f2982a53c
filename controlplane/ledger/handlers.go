package ledger

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/canonical"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// applyIngestBatch commits a batch of one agent's events in order. An event is a
// duplicate (skipped, counted) if its agent_seq is at or below the agent's committed
// seq, or its id is one this agent already committed (in the ledger or earlier in the
// batch) with the same content; a duplicate still raises committed_seq, so the agent
// may drop it from its outbox. An id this agent committed with other content is a
// conflict: the event is not committed, the result and the agent's record say which id
// and what differs, and committed_seq passes it (the first content stands). Ids are
// scoped by the agent the batch came from: another agent's ids never make an event a
// duplicate. Each new event gets the next global seq.
//
// A batch of another incarnation than the agent's current one, or of a revoked agent,
// commits nothing: its result carries the reason.
//
// If the next event would overrun the apply budget, or is larger than MaxEventBytes,
// the batch stops there: the rest is not committed, committed_seq says how far it got,
// and the agent sends the rest again. Batches within MaxBatchEvents and MaxBatchBytes of
// canonically valid events never stop early. A batch without a usable agent id (empty
// or over 1 KiB) commits nothing.
func applyIngestBatch(tx *applyTxn, cmd *storev1.Command) (any, error) {
	hdr, events, err := parseIngestBatch(cmd.GetPayload())
	if err != nil {
		return nil, fmt.Errorf("ledger: decode %s payload: %w", cmd.GetType(), err)
	}
	agent := hdr.agent
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
	if why := ingestRefusal(rec, hdr.incarnation); why != "" {
		res.Error, res.CommittedSeq, res.LastLedgerSeq = why, rec.GetCommittedSeq(), tx.lastSeq
		return res, nil
	}
	w := &chunkWriter{tx: tx, agent: agent, committedAt: timestamppb.New(tx.appendedAt)}
	tx.post.ids = make(map[string]uint64, len(events)) // also what this batch committed
	batchFirst := tx.lastSeq + 1
	var committedIdx []int // index in events of each event this batch committed
	w.remaining = len(cmd.GetPayload())
	// The events' id keys and their filter hashes first, so the filter's blocks are
	// read together (idFilter.warm).
	iks := make([][]byte, len(events))
	hs := make([]uint64, len(events))
	for i := range events {
		if ik := idKey(agent, events[i].id); ik != nil {
			iks[i], hs[i] = ik, tx.ids.hash(ik)
		}
	}
	tx.ids.warm(hs)
	for i := range events {
		ie := &events[i]
		dup := ie.agentSeq <= rec.GetCommittedSeq()
		ik := iks[i]
		if !dup && ik != nil {
			seq, seen := tx.post.ids[string(ik)]
			if !seen {
				var err error
				seq, seen, err = tx.post.pend.idSeqHash(tx.txn.Txn, ik, hs[i])
				if err != nil {
					return nil, fmt.Errorf("ledger: look up event id: %w", err)
				}
			}
			if seen {
				// Rare: a change sent again. The same content is a duplicate; other
				// content under the same id is a conflict.
				var earlier []byte
				if seq >= batchFirst {
					earlier = events[committedIdx[seq-batchFirst]].raw
				}
				c, err := idConflict(tx, seq, earlier, ie)
				if err != nil {
					return nil, err
				}
				if c != nil {
					c.At = timestamppb.New(tx.appendedAt)
					res.Conflicts = append(res.Conflicts, c)
					rec.Conflicts++
					rec.RecentConflicts = append(rec.RecentConflicts, c)
					if n := len(rec.RecentConflicts); n > maxRecentConflicts {
						rec.RecentConflicts = rec.RecentConflicts[n-maxRecentConflicts:]
					}
					rec.CommittedSeq = max(rec.CommittedSeq, ie.agentSeq)
					continue
				}
				dup = true
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
		committedIdx = append(committedIdx, i)
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

// maxRecentConflicts bounds AgentRecord.recent_conflicts.
const maxRecentConflicts = 20

// ingestRefusal says why an agent's batch sent for incarnation may not commit: "" when
// it may.
func ingestRefusal(rec *storev1.AgentRecord, incarnation uint64) string {
	switch {
	case rec.GetRevoked():
		return fmt.Sprintf("agent %s was revoked at %s: %s", rec.GetId(), formatTime(rec.GetRevokedAt().AsTime()), rec.GetRevokedReason())
	case incarnation != rec.GetIncarnation():
		return fmt.Sprintf("agent %s was enrolled again (incarnation %d); this stream belongs to incarnation %d, which is retired",
			rec.GetId(), rec.GetIncarnation(), incarnation)
	}
	return ""
}

// idConflict compares ie with the event its id names: seq in the ledger, or earlier
// (its raw AgentEvent) when it was committed by this batch. It returns nil when they are
// the same change (canonical.Differs).
func idConflict(tx *applyTxn, seq uint64, earlier []byte, ie *ingestEvent) (*storev1.IdConflict, error) {
	var next storev1.AgentEvent
	if err := proto.Unmarshal(ie.raw, &next); err != nil {
		return nil, fmt.Errorf("ledger: decode event %s: %w", ie.id, err)
	}
	var first *eventv1.Event
	if earlier != nil {
		var ae storev1.AgentEvent
		if err := proto.Unmarshal(earlier, &ae); err != nil {
			return nil, fmt.Errorf("ledger: decode event %s: %w", ie.id, err)
		}
		first = ae.GetEvent()
	} else {
		ce, ok, err := eventAt(tx.txn, seq)
		if err != nil {
			return nil, err
		}
		if !ok {
			if tx.post.pend.low != nil {
				// Retention removed the event but its id is still within the dedup
				// window: the same id again is a duplicate (the content cannot be
				// compared any more).
				return nil, nil
			}
			return nil, fmt.Errorf("ledger: id index names seq %d for %q, which the log does not hold", seq, ie.id)
		}
		first = ce.GetEvent()
	}
	d := canonical.Differs(first, next.GetEvent())
	if d == "" {
		return nil, nil
	}
	src := next.GetEvent().GetSource()
	return &storev1.IdConflict{
		Id: ie.id, AgentSeq: ie.agentSeq, Connector: src.GetConnector(), Position: src.GetPosition(),
		ExistingSeq: seq, Differs: d,
	}, nil
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
	if _, ok, err := getValue(tx.txn.Txn, k); err != nil {
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
	agent := &storev1.AgentRecord{}
	enrolled := false
	if tok.GetKind() != "server" {
		var err error
		if enrolled, err = tx.getProto(agentKey(agentID), agent); err != nil {
			return nil, err
		}
		switch {
		case enrolled && agent.GetRevoked() && !tok.GetReplace():
			return refuse(fmt.Errorf("%w: agent %s was revoked at %s; enroll it again with a token made with --replace",
				ErrAgentEnrolled, agentID, formatTime(agent.GetRevokedAt().AsTime())))
		case enrolled && !tok.GetReplace():
			return refuse(fmt.Errorf("%w: agent %s has been enrolled since %s (incarnation %d); to replace it, create the token with --replace, which retires the running agent",
				ErrAgentEnrolled, agentID, formatTime(agent.GetEnrolledAt().AsTime()), agent.GetIncarnation()))
		}
	}
	atpb := timestamppb.New(at)
	rec.Used, rec.UsedBy, rec.UsedAt = true, agentID, atpb
	if err := tx.setProto(k, rec); err != nil {
		return nil, err
	}
	if tok.GetKind() == "server" {
		return &storev1.ConsumeTokenResult{AgentId: agentID}, nil // a node, not an agent
	}
	// Every enrollment is a new incarnation with its own outbox seq space: the new
	// agent's outbox counts from 1, so nothing of the old one's committed seq may
	// apply to it. Its counters and conflicts are kept.
	if enrolled {
		agent.Replacements++
	}
	agent.Id, agent.EnrolledAt = agentID, atpb
	agent.Incarnation++
	agent.CommittedSeq = 0
	agent.Certs, agent.Instance = nil, ""
	agent.Revoked, agent.RevokedAt, agent.RevokedReason = false, nil, ""
	if err := tx.setProto(agentKey(agentID), agent); err != nil {
		return nil, err
	}
	return &storev1.ConsumeTokenResult{AgentId: agentID, Incarnation: agent.GetIncarnation()}, nil
}

// applyPutAgentCert records a certificate issued to an agent's current incarnation;
// the newest two stay valid (the one renewed keeps working until the agent switches).
func applyPutAgentCert(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var c storev1.PutAgentCert
	if err := decodePayload(cmd, &c); err != nil {
		return nil, err
	}
	rec, why, err := currentAgent(tx, c.GetAgentId(), c.GetIncarnation())
	if err != nil || why != "" {
		return &storev1.AgentCommandResult{Error: why}, err
	}
	rec.Certs = append(rec.Certs, c.GetCert())
	if n := len(rec.Certs); n > 2 {
		rec.Certs = rec.Certs[n-2:]
	}
	return &storev1.AgentCommandResult{}, tx.setProto(agentKey(rec.GetId()), rec)
}

// applyBindAgent binds an agent's incarnation to the outbox it streams from, the first
// time; another outbox is refused (a copied identity, or an outbox started afresh: its
// seqs would overlap the committed ones).
func applyBindAgent(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var b storev1.BindAgent
	if err := decodePayload(cmd, &b); err != nil {
		return nil, err
	}
	rec, why, err := currentAgent(tx, b.GetAgentId(), b.GetIncarnation())
	if err != nil || why != "" {
		return &storev1.AgentCommandResult{Error: why}, err
	}
	switch rec.GetInstance() {
	case b.GetInstance():
		return &storev1.AgentCommandResult{}, nil
	case "":
		rec.Instance = b.GetInstance()
		return &storev1.AgentCommandResult{}, tx.setProto(agentKey(rec.GetId()), rec)
	}
	return &storev1.AgentCommandResult{Error: fmt.Sprintf("%s: agent %s (incarnation %d) streams from outbox %s, this one is %s",
		ErrOtherOutbox, rec.GetId(), rec.GetIncarnation(), rec.GetInstance(), b.GetInstance())}, nil
}

// applyRevokeAgent retires an agent's identity.
func applyRevokeAgent(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var r storev1.RevokeAgent
	if err := decodePayload(cmd, &r); err != nil {
		return nil, err
	}
	rec := &storev1.AgentRecord{}
	ok, err := tx.getProto(agentKey(r.GetAgentId()), rec)
	if err != nil {
		return nil, err
	}
	if !ok {
		return &storev1.AgentCommandResult{Error: fmt.Sprintf("%s: %s", ErrAgentNotFound, r.GetAgentId())}, nil
	}
	if rec.GetRevoked() {
		return &storev1.AgentCommandResult{}, nil
	}
	at := r.GetAt()
	if at == nil {
		at = timestamppb.New(tx.appendedAt)
	}
	rec.Revoked, rec.RevokedAt, rec.RevokedReason = true, at, r.GetReason()
	rec.Certs = nil
	return &storev1.AgentCommandResult{}, tx.setProto(agentKey(rec.GetId()), rec)
}

// currentAgent reads an agent's record for a command about its incarnation; why says
// why the command does not apply (unknown agent, revoked, another incarnation).
func currentAgent(tx *applyTxn, id string, incarnation uint64) (*storev1.AgentRecord, string, error) {
	if id == "" || len(id) > maxKeyPart {
		return nil, fmt.Sprintf("%s: %q", ErrAgentNotFound, id), nil
	}
	rec := &storev1.AgentRecord{}
	ok, err := tx.getProto(agentKey(id), rec)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, fmt.Sprintf("%s: %s", ErrAgentNotFound, id), nil
	}
	if why := ingestRefusal(rec, incarnation); why != "" {
		return nil, why, nil
	}
	return rec, "", nil
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

// applyPutCA stores the cluster CA the first time; later ones are refused, except the
// same certificate with its key sealed anew (a secrets key rotation: internal/seal),
// which replaces the stored key and keeps the cluster id.
func applyPutCA(tx *applyTxn, cmd *storev1.Command) (any, error) {
	var ca storev1.PutCA
	if err := decodePayload(cmd, &ca); err != nil {
		return nil, err
	}
	var cur storev1.PutCA
	if ok, err := tx.getProto(keyCA, &cur); err != nil {
		return nil, fmt.Errorf("ledger: read CA: %w", err)
	} else if ok {
		if cur.GetCertPem() != ca.GetCertPem() || ca.GetKeyPem() == "" {
			return ErrCAExists, nil
		}
		cur.KeyPem = ca.GetKeyPem()
		return nil, tx.setProto(keyCA, &cur)
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
	for _, s := range []error{ErrTokenNotFound, ErrTokenUsed, ErrTokenExpired, ErrTokenSecret, ErrInvalidCommand, ErrAgentEnrolled} {
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
