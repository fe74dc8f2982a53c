package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/trace"

	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/platform/ratelog"
	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/internal/wire"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// Uplink serves UplinkService.
type Uplink struct {
	*Backend
}

var _ uplinkv1connect.UplinkServiceHandler = (*Uplink)(nil)

// Stream receives outbox batches from one agent and acknowledges each once a raft
// quorum committed it. Batches are proposed in arrival order without waiting (raft
// groups them into one disk write), and acks are sent in the same order.
func (u *Uplink) Stream(ctx context.Context, stream *connect.BidiStream[uplinkv1.StreamRequest, uplinkv1.StreamResponse]) error {
	agentID, cert, err := agentIdentity(ctx)
	if err != nil {
		return err
	}
	if !u.Store.IsLeader() {
		return u.notLeader()
	}
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("the first message on a stream must be hello"))
	}
	p := PeerFrom(ctx)
	log := u.Logger.With("agent", agentID, "transport", p.Transport, "remote", p.RemoteAddr)
	rec, err := u.admitStream(ctx, agentID, cert, hello)
	if err != nil {
		refusals.Log(log, slog.LevelWarn, agentID, "agent stream refused", "err", err) // an agent retries: once per window
		return err
	}
	committed, incarnation := rec.GetCommittedSeq(), rec.GetIncarnation()
	ctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	now := time.Now()
	touch, remove := u.Registry.Add(Conn{AgentID: agentID, Transport: p.Transport, RemoteAddr: p.RemoteAddr, Since: now, LastSeen: now,
		Version: hello.GetAgentVersion(), OutboxLastSeq: hello.GetOutboxLastSeq()}, end)
	defer remove()
	log.Info("agent stream opened", "committed_seq", committed, "outbox_last_seq", hello.GetOutboxLastSeq(), "incarnation", incarnation)
	// Acks and sink writes share the stream; Connect streams are not safe for
	// concurrent sends.
	// Nothing may send once the handler returns (Connect then writes the end of the
	// stream), so the last deferred call closes send.
	var (
		sendMu     sync.Mutex
		sendClosed bool
	)
	send := func(m *uplinkv1.StreamResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendClosed {
			return errors.New("agent stream closed")
		}
		return stream.Send(m)
	}
	defer func() {
		sendMu.Lock()
		sendClosed = true
		sendMu.Unlock()
	}()
	if err := send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Welcome{Welcome: &uplinkv1.Welcome{
		CommittedSeq: committed, NodeId: u.Store.NodeID(), AgentId: agentID,
	}}}); err != nil {
		return err
	}
	sink, detach := u.Sinks.attach(agentID, send)
	defer detach()
	u.fleet.update(agentID, func(e *fleetEntry) { e.version, e.lastContact = hello.GetAgentVersion(), time.Now() })
	go u.pushConfigs(ctx, agentID, send, log)                           // fleet.go: ends with the stream
	go u.pushUpgrades(ctx, agentID, hello.GetAgentVersion(), send, log) // rollout.go: ends with the stream

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pending := make(chan proposal, 64)
	received := make(chan error, 1)
	rl := &receiver{u: u, stream: stream, agentID: agentID, incarnation: incarnation, send: send, log: log}
	go func() { received <- rl.loop(ctx, committed+1, pending, sink) }()
	// The ack loop decides when the stream ends: if a proposal fails (this node lost
	// leadership) it returns at once, which ends the request and so unblocks the
	// receive loop; otherwise it drains every proposal after the agent closed its side.
	if err := u.ackLoop(ctx, send, pending, touch, log); err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = connect.NewError(connect.CodeAborted, cause)
		}
		log.Warn("agent stream ended", "err", err)
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		log.Warn("agent stream ended", "err", cause)
		return connect.NewError(connect.CodeAborted, cause)
	}
	if err := <-received; err != nil && !errors.Is(err, context.Canceled) && connect.CodeOf(err) != connect.CodeCanceled {
		log.Info("agent stream ended", "err", err)
		// The agent learns why: a bad batch, or new events refused (a node short of
		// disk; it keeps them and sends them again).
		if c := connect.CodeOf(err); c == connect.CodeInvalidArgument || c == connect.CodeResourceExhausted {
			return err
		}
	}
	return nil
}

// refusals rate-limits the log lines of refused agent streams per agent: a revoked
// agent keeps reconnecting.
var refusals = ratelog.New(0, 0)

// receiver reads one agent stream.
type receiver struct {
	u           *Uplink
	stream      *connect.BidiStream[uplinkv1.StreamRequest, uplinkv1.StreamResponse]
	agentID     string
	incarnation uint64
	send        func(*uplinkv1.StreamResponse) error
	log         *slog.Logger
}

// loop proposes each batch as it arrives and hands the futures to the ack loop, in
// order. It closes pending when it returns.
func (r *receiver) loop(ctx context.Context, next uint64, pending chan<- proposal, sink *agentStream) error {
	defer close(pending)
	u := r.u
	for {
		msg, err := r.stream.Receive()
		if err != nil {
			return err
		}
		if r.fleetMessage(msg) {
			continue
		}
		if rep := msg.GetConnectors(); rep != nil {
			if n := len(rep.GetConnectors()); n > MaxConnectorReport {
				return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("connector report has %d connectors, more than %d", n, MaxConnectorReport))
			}
			u.reports.put(r.agentID, rep.GetConnectors(), time.Now())
			continue
		}
		if res := msg.GetSinkResult(); res != nil {
			sink.result(res)
			continue
		}
		if rn := msg.GetRenew(); rn != nil {
			if err := r.renew(ctx, rn); err != nil {
				return err
			}
			continue
		}
		batch := msg.GetBatch()
		if batch == nil {
			continue
		}
		in, err := validateBatch(r.agentID, batch, &next)
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, err)
		}
		if in == nil {
			continue
		}
		var f raft.ApplyFuture
		if in.payload != nil {
			// The incarnation after the events: a field's place on the wire is free.
			in.payload = wire.AppendIngestIncarnation(in.payload, r.incarnation)
			f, err = u.Store.ProposePayloadAsync(storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, in.payload, u.applyTimeout())
		} else {
			in.cmd.Incarnation = r.incarnation
			f, err = u.Store.ProposeAsync(storev1.CommandType_COMMAND_TYPE_INGEST_BATCH, in.cmd, u.applyTimeout())
		}
		var spans []trace.Span
		if tracing.Enabled() {
			spans = commitSpans(r.agentID, in)
		}
		if err != nil {
			endCommitSpans(spans, nil, 0, err)
			return u.storeError(err)
		}
		select {
		case pending <- proposal{f, in.last, spans}:
		case <-ctx.Done():
			endCommitSpans(spans, nil, 0, ctx.Err())
			return ctx.Err()
		}
	}
}

// renew answers an agent's certificate renewal on its stream.
func (r *receiver) renew(ctx context.Context, rn *uplinkv1.RenewRequest) error {
	out := &uplinkv1.Renewed{}
	certPEM, err := r.u.issueAgentCert(ctx, []byte(rn.GetCsrPem()), r.agentID, r.incarnation)
	if err != nil {
		out.Error = connect.NewError(connect.CodeOf(err), errors.New(err.Error())).Message()
		r.log.Warn("agent certificate renewal refused", "err", err)
	} else {
		out.CertificatePem = string(certPEM)
		r.log.Info("agent certificate renewed", "audit", true)
	}
	return r.send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Renewed{Renewed: out}})
}

// admitStream checks an agent's stream against its record before anything is
// acknowledged: the certificate (admitAgent), the outbox it streams from (bound to the
// incarnation at its first stream) and its seqs: an outbox whose last seq is below what
// the ledger committed for the incarnation was reset or replaced, and acknowledging
// its seqs would drop its events.
func (u *Uplink) admitStream(ctx context.Context, agentID string, cert *x509.Certificate, hello *uplinkv1.Hello) (*storev1.AgentRecord, error) {
	rec, ok, err := u.Store.Ledger().Agent(agentID)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if err := admitAgent(rec, ok, agentID, cert); err != nil {
		return nil, err
	}
	if inst := hello.GetOutboxInstance(); inst != "" && rec.GetInstance() != inst {
		res, err := u.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_BIND_AGENT, &storev1.BindAgent{
			AgentId: agentID, Incarnation: rec.GetIncarnation(), Instance: inst,
		})
		if err != nil {
			return nil, u.storeError(err)
		}
		if r, _ := res.(*storev1.AgentCommandResult); r.GetError() != "" {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s: the agent's identity was copied to another data dir, or its outbox was deleted; "+
				"give this agent its own enrollment (`crossdock token create --name %s --replace` retires the old one)", r.GetError(), agentID))
		}
		rec.Instance = inst
	}
	if c := rec.GetCommittedSeq(); c > hello.GetOutboxLastSeq() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"the ledger holds agent %s's outbox up to seq %d, but this agent's outbox only reaches seq %d: it was reset or replaced, and its seqs would be taken for events already committed; "+
				"re-enroll it with `crossdock token create --name %s --replace`", agentID, c, hello.GetOutboxLastSeq(), agentID))
	}
	return rec, nil
}

// proposal is a batch handed to raft, with the last agent seq it carried.
type proposal struct {
	future raft.ApplyFuture
	last   uint64
	spans  []trace.Span // the events' commit spans (tracing on only)
}

func (u *Uplink) ackLoop(ctx context.Context, send func(*uplinkv1.StreamResponse) error, pending <-chan proposal, touch func(), log *slog.Logger) error {
	for {
		var p proposal
		select {
		case q, ok := <-pending:
			if !ok {
				return nil
			}
			p = q
		case <-ctx.Done():
			// Ended from outside (a newer stream of the agent, revocation,
			// re-enrollment): the handler returns now, which ends the request.
			return context.Cause(ctx)
		}
		res, err := store.Wait(p.future)
		if p.spans != nil {
			endCommitSpans(p.spans, p.future, len(p.spans), err)
		}
		if err != nil {
			return u.storeError(err)
		}
		r, ok := res.(*storev1.IngestResult)
		if !ok {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected ingest result %T", res))
		}
		if r.GetError() != "" {
			return connect.NewError(connect.CodePermissionDenied, errors.New(r.GetError()))
		}
		touch()
		// The ledger may stop a batch early (its transaction budget); the stream's cursor
		// is past it, so end the stream: the agent resumes from committed_seq.
		truncated := r.GetCommittedSeq() < p.last
		ack := &uplinkv1.Ack{CommittedSeq: r.GetCommittedSeq(), Committed: r.GetCommitted(), Duplicates: r.GetDuplicates()}
		for _, c := range r.GetConflicts() {
			log.Warn("event id conflict: not committed", "id", c.GetId(), "agent_seq", c.GetAgentSeq(), "connector", c.GetConnector(),
				"existing_seq", c.GetExistingSeq(), "differs", c.GetDiffers())
			ack.Conflicts = append(ack.Conflicts, &uplinkv1.Conflict{
				Id: c.GetId(), Seq: c.GetAgentSeq(), Connector: c.GetConnector(), Position: c.GetPosition(),
				ExistingLedgerSeq: c.GetExistingSeq(), Differs: c.GetDiffers(),
			})
		}
		if err := send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Ack{Ack: ack}}); err != nil {
			return err
		}
		if truncated {
			return connect.NewError(connect.CodeAborted, fmt.Errorf("batch committed only up to seq %d of %d; resend from there", r.GetCommittedSeq(), p.last))
		}
	}
}
