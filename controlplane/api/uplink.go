package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/store"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/internal/wire"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// AgentCertTTL is how long an agent certificate is valid by default
// (Backend.AgentCertTTL). Agents renew theirs over the uplink stream when a third of its
// lifetime is left.
const AgentCertTTL = 365 * 24 * time.Hour

// Backend is what the handlers need from the node they run on.
type Backend struct {
	Store    *store.Store
	CA       func() *pki.CA
	Registry *Registry
	Logger   *slog.Logger
	// ApplyTimeout bounds one raft apply (default 10s).
	ApplyTimeout time.Duration
	// AgentCertTTL is the lifetime of the certificates issued to agents at enrollment
	// and renewal (AgentCertTTL when 0).
	AgentCertTTL time.Duration

	reports connectorReports
	// Sinks is the downlink to agents' sink connectors, for the delivery engine.
	Sinks AgentSinks
}

// connectorReports keeps the latest connector report of each agent streaming to this
// node, in memory: it is live status, not state worth a raft entry, and admin reads run
// on the leader, which is where agents stream.
type connectorReports struct {
	mu sync.Mutex
	m  map[string]connectorReport
}

type connectorReport struct {
	at         time.Time
	connectors []*agentv1.ConnectorStatus
}

func (r *connectorReports) put(agentID string, cs []*agentv1.ConnectorStatus, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]connectorReport{}
	}
	r.m[agentID] = connectorReport{at: at, connectors: cs}
}

func (r *connectorReports) get(agentID string) (connectorReport, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.m[agentID]
	return c, ok
}

// MaxConnectorReport bounds the connectors of one report.
const MaxConnectorReport = 256

func (b *Backend) agentCertTTL() time.Duration {
	if b.AgentCertTTL > 0 {
		return b.AgentCertTTL
	}
	return AgentCertTTL
}

func (b *Backend) applyTimeout() time.Duration {
	if b.ApplyTimeout > 0 {
		return b.ApplyTimeout
	}
	return 10 * time.Second
}

// LeaderAPIAddr returns the current leader's API address, "" when unknown.
func (b *Backend) LeaderAPIAddr() string {
	_, id := b.Store.Leader()
	if id == "" {
		return ""
	}
	n, ok, err := b.Store.Ledger().Node(id)
	if err != nil || !ok {
		return ""
	}
	return n.GetApiAddr()
}

// notLeader answers a call that needs the leader but reached a follower.
func (b *Backend) notLeader() error {
	addr, id := b.Store.Leader()
	if addr == "" {
		return connect.NewError(connect.CodeUnavailable, errors.New("no raft leader elected yet; retry shortly"))
	}
	api := b.LeaderAPIAddr()
	err := connect.NewError(connect.CodeUnavailable, fmt.Errorf("this node is not the leader; the leader is %s at %s", id, api))
	if api != "" {
		err.Meta().Set(protocol.LeaderHeader, api)
	}
	return err
}

// ConsistentRead returns once this node is the leader and has applied everything
// committed when the call arrived, so a read after it reflects every write acknowledged
// before it.
//
// It commits a raft barrier and waits for the FSM to apply it. A read index (verify
// leadership, then wait for the commit index) is not enough with hashicorp/raft: a new
// leader's CommitIndex lags until it commits an entry of its own term (a write the old
// leader acknowledged can be missing), and Raft.AppliedIndex counts entries handed to
// the FSM, not applied by it. The barrier is an entry of this leader's term, so it
// commits only while this node leads a quorum and after every acknowledged write, and
// its future returns after the FSM has applied everything before it.
func (b *Backend) ConsistentRead(ctx context.Context) error {
	if !b.Store.IsLeader() {
		return b.notLeader()
	}
	if err := b.Store.Raft().Barrier(b.applyTimeout()).Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return b.storeError(store.ErrClosed)
		}
		return b.notLeader()
	}
	return nil
}

func (b *Backend) storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, raft.ErrNotLeader):
		return b.notLeader()
	case errors.Is(err, store.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, errors.New("control plane node is shutting down"))
	}
	return connect.NewError(connect.CodeInternal, err)
}

// Uplink serves UplinkService.
type Uplink struct {
	*Backend
}

var _ uplinkv1connect.UplinkServiceHandler = (*Uplink)(nil)

// Enroll trades a single-use token and a CSR for an agent certificate.
func (u *Uplink) Enroll(ctx context.Context, req *connect.Request[uplinkv1.EnrollRequest]) (*connect.Response[uplinkv1.EnrollResponse], error) {
	tok, err := pki.ParseToken(req.Msg.GetToken())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ca := u.CA()
	if tok.CAPin != ca.Pin() {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("enrollment token pins CA %s but this cluster's CA is %s: the token was made for another cluster", tok.CAPin, ca.Pin()))
	}
	if n := req.Msg.GetAgentName(); n != "" && !canonical.ValidName(n) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("agent_name: %q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", n))
	}
	if req.Msg.GetCsrPem() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("csr_pem: required"))
	}
	if !u.Store.IsLeader() {
		return nil, u.notLeader()
	}
	if rec, ok, err := u.Store.Ledger().Token(tok.ID); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	} else if ok && rec.GetToken().GetKind() == "server" {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("this is a server join token; an agent enrolls with `crossdock token create` (kind agent)"))
	}
	res, err := u.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_CONSUME_TOKEN, &storev1.ConsumeToken{
		Id:           tok.ID,
		SecretSha256: pki.HashSecret(tok.Secret),
		At:           timestamppb.Now(),
		AgentName:    req.Msg.GetAgentName(),
	})
	if err != nil {
		return nil, u.storeError(err)
	}
	r, ok := res.(*storev1.ConsumeTokenResult)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("unexpected consume result %T", res))
	}
	if r.GetError() != "" {
		u.Logger.Warn("enrollment refused", "token_id", tok.ID, "reason", r.GetError(), "remote", PeerFrom(ctx).RemoteAddr)
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(r.GetError()))
	}
	certPEM, err := u.issueAgentCert(ctx, []byte(req.Msg.GetCsrPem()), r.GetAgentId(), r.GetIncarnation())
	if err != nil {
		return nil, err
	}
	if r.GetIncarnation() > 1 {
		// The name was enrolled before: the old incarnation is retired.
		u.Registry.Kick(r.GetAgentId(), fmt.Errorf("agent %s was enrolled again (incarnation %d); this identity is retired", r.GetAgentId(), r.GetIncarnation()))
	}
	u.Logger.Info("agent enrolled", "agent", r.GetAgentId(), "incarnation", r.GetIncarnation(), "token_id", tok.ID, "remote", PeerFrom(ctx).RemoteAddr, "audit", true)
	return connect.NewResponse(&uplinkv1.EnrollResponse{
		AgentId:        r.GetAgentId(),
		CertificatePem: string(certPEM),
		CaPem:          string(ca.CertPEM()),
	}), nil
}

// issueAgentCert signs a certificate for an agent's incarnation and records it, so
// the agent may connect with it.
func (b *Backend) issueAgentCert(ctx context.Context, csrPEM []byte, agentID string, incarnation uint64) ([]byte, error) {
	certPEM, err := b.CA().SignCSR(csrPEM, agentID, pki.RoleAgent, b.agentCertTTL())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("csr_pem: %w", err))
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	res, err := b.Store.Propose(ctx, storev1.CommandType_COMMAND_TYPE_PUT_AGENT_CERT, &storev1.PutAgentCert{
		AgentId: agentID, Incarnation: incarnation,
		Cert: &storev1.AgentCert{
			Serial: cert.SerialNumber.Bytes(), NotAfter: timestamppb.New(cert.NotAfter), IssuedAt: timestamppb.Now(),
		},
	})
	if err != nil {
		return nil, b.storeError(err)
	}
	if r, _ := res.(*storev1.AgentCommandResult); r.GetError() != "" {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New(r.GetError()))
	}
	return certPEM, nil
}

// agentIdentity returns the agent id and certificate from a verified client
// certificate.
func agentIdentity(ctx context.Context) (string, *x509.Certificate, error) {
	p := PeerFrom(ctx)
	id, role, err := pki.PeerIdentity(p.TLS)
	if err != nil {
		if errors.Is(err, pki.ErrNoPeerCert) {
			return "", nil, connect.NewError(connect.CodeUnauthenticated, errors.New("client certificate required: enroll this agent first (crossdock agent --enroll-token TOKEN)"))
		}
		return "", nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("client certificate: %w", err))
	}
	if role != pki.RoleAgent {
		return "", nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("certificate role %q may not stream events; only agents may", role))
	}
	return id, p.TLS.VerifiedChains[0][0], nil
}

// admitAgent checks that an agent's record lets this certificate stream: enrolled,
// not revoked, and, from incarnations on, a certificate issued to the current one.
func admitAgent(rec *storev1.AgentRecord, ok bool, agentID string, cert *x509.Certificate) error {
	switch {
	case !ok:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("agent %s is not enrolled in this cluster: enroll it with a token from `crossdock token create --name %s`", agentID, agentID))
	case rec.GetRevoked():
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("agent %s was revoked at %s (%s): enroll it again with a token from `crossdock token create --name %s --replace`",
			agentID, rec.GetRevokedAt().AsTime().UTC().Format(time.RFC3339), rec.GetRevokedReason(), agentID))
	case rec.GetIncarnation() == 0 && len(rec.GetCerts()) == 0:
		return nil // enrolled before certificates were recorded
	}
	serial := cert.SerialNumber.Bytes()
	for _, c := range rec.GetCerts() {
		if bytes.Equal(c.GetSerial(), serial) {
			return nil
		}
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("this certificate (serial %x) is not one of agent %s's current certificates: the agent was enrolled again (incarnation %d) or renewed its certificate elsewhere; this identity is retired",
		serial, agentID, rec.GetIncarnation()))
}

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
		log.Warn("agent stream refused", "err", err)
		return err
	}
	committed, incarnation := rec.GetCommittedSeq(), rec.GetIncarnation()
	ctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	now := time.Now()
	touch, remove := u.Registry.Add(Conn{AgentID: agentID, Transport: p.Transport, RemoteAddr: p.RemoteAddr, Since: now, LastSeen: now}, end)
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
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return err
		}
	}
	return nil
}

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
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		select {
		case pending <- proposal{f, in.last}:
		case <-ctx.Done():
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
		if rec, _, err = u.Store.Ledger().Agent(agentID); err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
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

// ingest is a validated batch, ready for raft.
type ingest struct {
	payload []byte               // the encoded command, built from the events as sent; or
	cmd     *storev1.IngestBatch // the command to encode
	last    uint64               // the agent seq of its last event
}

// validateBatch checks a batch and turns it into a raft command. Seqs must be increasing;
// entries at or below what this stream already sent are dropped (a re-send after a
// reconnect). It returns nil when nothing is left. A batch the codec did not decode
// (UplinkCodec) is checked in place (fastBatch) and its payload built from the events'
// bytes as sent; if any event needs it, the batch is decoded and checked the slow way,
// which still builds the payload from the sent bytes unless an event carries fields
// this version does not know.
func validateBatch(agentID string, batch *uplinkv1.Batch, next *uint64) (*ingest, error) {
	raw := rawEvents(batch)
	if raw != nil {
		if len(raw) > ledger.MaxBatchEvents {
			return nil, fmt.Errorf("batch has %d events, more than %d", len(raw), ledger.MaxBatchEvents)
		}
		if in, ok := fastBatch(agentID, raw, next); ok {
			return in, nil
		}
		var full uplinkv1.Batch
		if err := proto.Unmarshal(batch.ProtoReflect().GetUnknown(), &full); err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
		batch = &full
	}
	if n := len(batch.GetEvents()); n > ledger.MaxBatchEvents {
		return nil, fmt.Errorf("batch has %d events, more than %d", n, ledger.MaxBatchEvents)
	}
	var payload []byte
	if raw != nil {
		size := len(agentID) + 8
		for _, r := range raw {
			size += len(r) + 8
		}
		payload = wire.AppendIngestHeader(size, agentID)
	}
	cmd := &storev1.IngestBatch{AgentId: agentID}
	for i, oe := range batch.GetEvents() {
		ev := oe.GetEvent()
		if oe.GetSeq() < *next {
			continue
		}
		if ev.GetId() == "" {
			return nil, fmt.Errorf("events[%d] (seq %d): id is required", i, oe.GetSeq())
		}
		// The size checked is the event's encoding as sent when the codec kept it (what
		// the agent checked and what the ledger stores), else as encoded here.
		err := canonical.ValidateFields(ev)
		if err == nil {
			if n, ok := wireEventLen(raw, i); ok {
				err = canonical.CheckSize(n)
			} else {
				err = canonical.CheckSize(proto.Size(ev))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("events[%d] (seq %d): %w", i, oe.GetSeq(), err)
		}
		if a := ev.GetSource().GetAgent(); a != agentID {
			return nil, fmt.Errorf("events[%d] (seq %d): source.agent %q is not this agent (%q)", i, oe.GetSeq(), a, agentID)
		}
		cmd.Events = append(cmd.Events, &storev1.AgentEvent{AgentSeq: oe.GetSeq(), Event: ev})
		switch {
		case raw == nil:
		case len(oe.ProtoReflect().GetUnknown()) > 0:
			// A newer agent's field would ride into the ledger: encode the batch here.
			raw, payload = nil, nil
		default:
			payload = wire.AppendIngestEvent(payload, raw[i])
		}
		*next = oe.GetSeq() + 1
	}
	if len(cmd.Events) == 0 {
		return nil, nil
	}
	in := &ingest{cmd: cmd, last: cmd.Events[len(cmd.Events)-1].GetAgentSeq()}
	if payload != nil {
		in.payload, in.cmd = payload, nil
	}
	return in, nil
}

// wireEventLen is the sent length of raw[i]'s event; ok is false when raw is nil (the
// batch was decoded) or the entry does not split.
func wireEventLen(raw [][]byte, i int) (int, bool) {
	if raw == nil {
		return 0, false
	}
	return wire.EventLen(raw[i])
}
