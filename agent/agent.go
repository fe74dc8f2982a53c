// Package agent is the Crossdock agent as a library: it keeps an mTLS identity, a
// durable outbox, the uplink to the control plane and a local API through which events
// are handed to it.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/agent/config"
	"github.com/crossdock/crossdock/agent/localapi"
	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/pluginhost"
	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/internal/wire"
	"github.com/crossdock/crossdock/plugins/sdk"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Version is reported to the control plane.
var Version = "dev"

// DefaultConnector names the source of events handed in through the local API.
const DefaultConnector = "publish"

// Config configures an agent.
type Config struct {
	// Name is the agent id asked for at enrollment (the token may fix it instead).
	Name string
	// DataDir holds the identity and the outbox.
	DataDir string
	// Servers are control plane addresses, host:port.
	Servers []string
	// EnrollToken is used once, when the agent has no identity yet.
	EnrollToken string
	// LocalAddr is the local API address; 127.0.0.1:7480 when empty, "-" to disable.
	LocalAddr string
	// DisableQUIC forces HTTP/2 over TCP.
	DisableQUIC bool
	// HTTP3Retry is how often an uplink on HTTP/2 checks whether HTTP/3 works again
	// (uplink.Config.HTTP3Retry; default 2m).
	HTTP3Retry time.Duration
	// QuotaBytes bounds the outbox (pending event bytes); 1 GiB when 0.
	QuotaBytes int64
	// BatchMaxEvents and Window tune the uplink.
	BatchMaxEvents int
	Window         int
	Logger         *slog.Logger
	// Connectors are run as plugin subprocesses (agent/pluginhost). PluginSelf is the
	// executable that serves built-in connectors (`PluginSelf plugin <type>`); the
	// running executable when empty.
	Connectors []pluginhost.Connector
	PluginSelf string
	// PluginMinBackoff and PluginMaxBackoff bound a crashed plugin's restart delay
	// (1s and 1m when zero).
	PluginMinBackoff, PluginMaxBackoff time.Duration
	// RenewCheck is how often the agent checks whether its certificate is due for
	// renewal (a third of its lifetime left) while connected; 1h when zero.
	RenewCheck time.Duration
	// MetricsListen serves /metrics, /healthz and /readyz over plain HTTP; empty disables it.
	MetricsListen string
	// AfterSinkWrite, when set, is called after a sink connector's write returned and
	// before the order.ack is published. Fault injection for tests only (the agent
	// command SIGKILLs itself there when told, see cmd/crossdock/agent.go).
	AfterSinkWrite func(connector string, ev *eventv1.Event)
	// Labels are sent at enrollment; AgentConfig documents select agents by them.
	Labels map[string]string
	// LocalConfig says the connectors come from a local config file: central
	// configurations (AgentConfig) are then reported as "local" and not applied.
	LocalConfig bool
	// Builtins, when set, tells whether a built-in connector type exists, so a central
	// configuration naming another one is refused with its field.
	Builtins func(string) bool
	// ConfigEnv resolves the ${env:}/${file:} references of central configurations;
	// config.OSEnv when nil.
	ConfigEnv *config.Env
	// Upgrade, when set, takes over a release the control plane sent, downloaded into
	// UpgradeDir and checked (agent/upgrade.go); without it upgrades are refused.
	// UpgradeReport is the report to send at start (the outcome of the last upgrade).
	Upgrade       UpgradeFunc
	UpgradeDir    string
	UpgradeReport *uplinkv1.UpgradeReport
}

// recentIDCount bounds how many recent ids given by a caller or derived from a position
// Publish remembers, to refuse one repeated with other content at once. Small enough
// that its map stays in the CPU's caches: a map of 65,536 cost a loaded agent about
// 0.6 µs per event in cache misses (bench/clusterbench).
const recentIDCount = 1 << 12

// Agent is a running agent.
type Agent struct {
	cfg    Config
	logger *slog.Logger
	id     *identity
	outbox *outbox.Outbox
	uplink *uplink.Uplink
	local  net.Listener
	host   *pluginhost.Host // nil without connectors

	renew     *renewer
	fleet     *fleet
	upgrades  upgrades
	runCtx    context.Context // Run's: set before the uplink starts
	recent    *recentIDs
	conflicts conflicts

	obs agentObs // metrics and readiness (agent/metrics.go)
}

// New enrolls the agent if it has no identity yet, opens the outbox and binds the local
// API. Run starts streaming.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: DataDir is required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("agent: at least one control plane address (--server) is required")
	}
	if cfg.LocalAddr == "" {
		cfg.LocalAddr = "127.0.0.1:7480"
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: create data dir: %w", err)
	}
	id, err := loadIdentity(cfg.DataDir)
	switch {
	case errors.Is(err, ErrNotEnrolled) && cfg.EnrollToken != "":
		if id, err = enroll(ctx, cfg.DataDir, cfg.Servers, cfg.EnrollToken, cfg.Name, cfg.Labels); err != nil {
			return nil, err
		}
		logger.Info("agent enrolled", "agent", id.ID)
	case err != nil:
		return nil, err
	case cfg.EnrollToken != "":
		logger.Info("agent already enrolled; ignoring the enrollment token", "agent", id.ID)
	}
	a := &Agent{cfg: cfg, logger: logger.With("agent", id.ID), id: id, renew: newRenewer(cfg.DataDir, id), fleet: newFleet(), recent: newRecentIDs(recentIDCount)}
	a.outbox, err = outbox.Open(outbox.Options{Dir: filepath.Join(cfg.DataDir, "outbox"), QuotaBytes: cfg.QuotaBytes, Logger: a.logger})
	if errors.Is(err, outbox.ErrDamaged) {
		return nil, fmt.Errorf("agent: %w\nThe agent does not start on a damaged outbox. Stop here and run `crossdock agent repair --data-dir %s`: it keeps every intact event, reports what was lost and sets the damaged files aside (docs/operations.md)", err, cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: open outbox: %w", err)
	}
	instance, err := a.outbox.Instance()
	if err != nil {
		a.outbox.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	// The host runs the local file's connectors, or those of the central configuration
	// (none until one arrives).
	a.host, err = pluginhost.New(pluginhost.Options{
		AgentID: id.ID, Outbox: a.outbox, Self: cfg.PluginSelf, Logger: a.logger,
		MinBackoff: cfg.PluginMinBackoff, MaxBackoff: cfg.PluginMaxBackoff,
	}, cfg.Connectors)
	if err == nil {
		err = a.host.Check(ctx)
	}
	if err != nil {
		a.outbox.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	connectors, changed := a.host.Status, a.host.Changed
	a.uplink = uplink.New(uplink.Config{
		Servers: cfg.Servers,
		TLS: &tls.Config{
			MinVersion:           tls.VersionTLS13,
			GetClientCertificate: a.renew.clientCert,
			RootCAs:              id.CA,
		},
		Instance:       instance,
		Conflicts:      a.noteConflicts,
		Renewal:        a.renew,
		RenewCheck:     cfg.RenewCheck,
		DisableQUIC:    cfg.DisableQUIC,
		HTTP3Retry:     cfg.HTTP3Retry,
		Outbox:         a.outbox,
		BatchMaxEvents: cfg.BatchMaxEvents,
		Window:         cfg.Window,
		AgentVersion:   Version,
		Logger:         a.logger,

		Connectors:        connectors,
		ConnectorsChanged: changed,
		Sink:              a.sinkWrite,
		IsPermanent: func(err error) bool {
			return errors.Is(err, sdk.ErrPermanent) || errors.Is(err, pluginhost.ErrUnknown)
		},
		OnConfig:  a.fleet.offer,
		Fleet:     a.fleetReport,
		OnUpgrade: a.offerUpgrade,
		Upgrade:   a.upgrades.Report,
	})
	a.upgrades.report = cfg.UpgradeReport
	a.loadSavedConfig(ctx)
	if cfg.LocalAddr != "-" {
		a.local, err = net.Listen("tcp", cfg.LocalAddr)
		if err != nil {
			a.outbox.Close()
			return nil, fmt.Errorf("agent: local API listen on %s: %w", cfg.LocalAddr, err)
		}
	}
	if err := a.startMetrics(); err != nil {
		if a.local != nil {
			a.local.Close()
		}
		a.outbox.Close()
		return nil, err
	}
	return a, nil
}

// ID is the agent's enrolled id.
func (a *Agent) ID() string { return a.id.ID }

// LocalAddr is the bound local API address, "" when disabled.
func (a *Agent) LocalAddr() string {
	if a.local == nil {
		return ""
	}
	return a.local.Addr().String()
}

// Outbox exposes the agent's outbox (for connectors and benchmarks).
func (a *Agent) Outbox() *outbox.Outbox { return a.outbox }

// Plugins is the agent's connector host (nil without connectors): sinks are written
// through it.
func (a *Agent) Plugins() *pluginhost.Host { return a.host }

// Run streams the outbox, runs the connectors and serves the local API until ctx is
// done. A connector's failure never ends Run: it shows in Status.
func (a *Agent) Run(ctx context.Context) error {
	a.runCtx = ctx
	defer a.outbox.Close()
	defer a.stopMetrics()
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); a.host.Run(hctx) }()
	go func() { defer func() { done <- struct{}{} }(); a.runFleet(hctx) }()
	// Plugins stop before the outbox closes under them.
	defer func() { stop(); <-done; <-done }()
	errc := make(chan error, 2)
	if a.local != nil {
		go func() { errc <- localapi.Serve(ctx, a.local, a, a.logger) }()
		a.logger.Info("local API listening", "addr", a.LocalAddr())
	}
	go func() { errc <- a.uplink.Run(ctx) }()
	err := <-errc
	if ctx.Err() != nil {
		if a.local != nil {
			<-errc
		}
		return nil
	}
	return err
}

// Publish validates events, gives each its deterministic id, and appends them to the
// outbox; it returns once they are fsynced.
func (a *Agent) Publish(ctx context.Context, connector string, events []*eventv1.Event) (_ *agentv1.PublishResponse, err error) {
	if connector == "" {
		connector = DefaultConnector
	}
	if len(events) == 0 {
		return &agentv1.PublishResponse{}, nil
	}
	ids := make([]string, len(events))
	// Events whose id does not derive from their content (a caller's id or position)
	// can repeat an id with other content: checked here, within the call and against
	// what was published lately, so the publisher hears of it (the control plane would
	// not commit it).
	var call *callIDs // taken from callIDsPool at the first event with an id to check
	defer func() {
		if call != nil {
			call.release()
		}
	}()
	// Events are encoded straight into the outbox's record layout, which it writes
	// without copying.
	rs := recordsPool.Get().(*outbox.Records)
	defer putRecords(rs)
	// With tracing on, a span per event from here until the outbox fsynced it; its
	// context rides in the event (Event.trace). Off, nothing is allocated.
	var spans []trace.Span
	defer func() {
		if spans != nil {
			tracing.EndAll(spans, err)
		}
	}()
	for i, ev := range events {
		chosen := ev.GetId() != "" || ev.GetSource().GetPosition() != ""
		if err := canonical.Stamp(ev, a.id.ID, connector, timestamppb.Now); err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		if tracing.Enabled() { // after Stamp: the id does not depend on the trace
			if spans == nil {
				spans = make([]trace.Span, 0, len(events))
			}
			spans = append(spans, tracing.StartEvent(ctx, tracing.SpanPublish, ev, a.id.ID, connector))
		}
		rec := rs.AddFunc(func(b []byte) []byte { return wire.AppendEvent(b, ev) })
		if i == 0 && len(events) > 1 { // size the buffer for the batch from its first event
			rs.Grow(min((len(rec)+3)*len(events)*9/8, 4<<20))
		}
		// The size is checked on the event as it will be sent, with its source and id:
		// the control plane checks the same, and an event it refused would stop the
		// uplink at that point of the outbox.
		if err := canonical.CheckSize(len(rec)); err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		ids[i] = ev.Id
		if chosen {
			if call == nil {
				call = callIDsPool.Get().(*callIDs)
				call.reset(len(events))
			}
			if err := a.checkID(call, i, ids, rec); err != nil {
				return nil, err
			}
		}
	}
	first, last, err := a.appendRecords(ctx, rs)
	if err != nil {
		return nil, err
	}
	if call != nil {
		a.recent.addCall(ids, call.hashes, call.prints, first)
	}
	return &agentv1.PublishResponse{FirstSeq: first, LastSeq: last, Ids: ids}, nil
}

// appendRecords appends a publish call's records. With a deadline it stops waiting for
// quota a little before it, so the caller hears why (resource_exhausted, with the outbox
// and uplink state) rather than only that its own deadline passed.
func (a *Agent) appendRecords(ctx context.Context, rs *outbox.Records) (first, last uint64, err error) {
	if dl, ok := ctx.Deadline(); ok {
		margin := min(time.Until(dl)/10, time.Second)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	first, last, err = a.outbox.AppendRecords(ctx, rs)
	if errors.Is(err, outbox.ErrQuotaFull) {
		us := a.uplink.Status()
		uplinkState := us.State
		if us.LastError != "" {
			uplinkState += " (" + us.LastError + ")"
		}
		err = fmt.Errorf("none of the %d events of this call was written: %w; uplink %s; the outbox drains as the control plane acknowledges",
			rs.Len(), err, uplinkState)
	}
	return first, last, err
}

// checkID refuses event i of a publish call when its id (ids[i], one not derived from
// its content) repeats an id of the same call, or of an event published lately, with
// other content. It records the event's fingerprint in c.
func (a *Agent) checkID(c *callIDs, i int, ids []string, rec []byte) error {
	id := ids[i]
	h := maphash.String(printSeed, id)
	p := contentPrint(rec) | 1      // never 0: 0 marks an event not checked
	c.hashes[i], c.recs[i] = h, rec // rec stays valid: records are only appended after it
	if j, ok := c.earlier(h); ok && ids[j] == id {
		if same, d := canonical.SameContent(c.recs[j], rec); !same {
			return idConflictError(i, id, fmt.Sprintf("earlier in this call (events[%d])", j), d)
		}
		return nil // the same change twice: the first one is recorded
	}
	c.checked = append(c.checked, i)
	c.prints[i] = p
	r, ok := a.recent.lookup(id, h)
	if !ok || r.print == p {
		return nil
	}
	// The fingerprints differ: name what differs if the earlier event is still in the
	// outbox, else say which seq it had.
	d := fmt.Sprintf("type, keys or payload differ from the event published at agent seq %d", r.seq)
	if es, err := a.outbox.Read(r.seq, 1, 4<<20); err == nil && len(es) == 1 && es[0].Seq == r.seq {
		same, dd := canonical.SameContent(es[0].Data, rec)
		if same {
			return nil
		}
		d = dd
	}
	return idConflictError(i, id, "before", d)
}

// recordsPool holds publish calls' record buffers: a fresh one per call was most of
// what an agent allocated under load, and so most of its garbage collection.
var recordsPool = sync.Pool{New: func() any { return new(outbox.Records) }}

// putRecords returns rs to recordsPool, unless it grew past what a usual batch needs.
func putRecords(rs *outbox.Records) {
	if rs.Cap() > 4<<20 {
		return
	}
	rs.Reset()
	recordsPool.Put(rs)
}

// Status describes the agent.
func (a *Agent) Status() *agentv1.AgentStatus {
	us := a.uplink.Status()
	os := a.outbox.Stats()
	st := &agentv1.AgentStatus{
		AgentId: a.id.ID, UplinkState: us.State, Transport: us.Transport, Server: us.Server,
		LastError: us.LastError, CommittedSeq: us.CommittedSeq,
		Outbox: &agentv1.OutboxStatus{
			PendingEvents: os.PendingEvents, PendingBytes: os.PendingBytes, QuotaBytes: os.QuotaBytes,
			LastSeq: os.LastSeq, Blocked: os.Blocked, BlockedReason: os.BlockedReason,
		},
	}
	if a.host != nil {
		st.Connectors = a.host.Status()
	}
	if !us.ConnectedSince.IsZero() && us.State == uplink.StateConnected {
		st.ConnectedSince = timestamppb.New(us.ConnectedSince)
	}
	st.Refused = us.Refused
	st.CertNotAfter = timestamppb.New(a.renew.NotAfter())
	a.conflicts.fill(st)
	return st
}

// noteConflicts records events the control plane did not commit because their id was
// committed before with other content, and says so in the log.
func (a *Agent) noteConflicts(cs []*uplinkv1.Conflict) {
	for _, c := range cs {
		a.logger.Error("event not committed: its id was committed before with other content",
			"id", c.GetId(), "connector", c.GetConnector(), "position", c.GetPosition(), "seq", c.GetSeq(),
			"existing_ledger_seq", c.GetExistingLedgerSeq(), "differs", c.GetDiffers())
	}
	a.conflicts.add(cs)
}

// sinkWrite writes one event the control plane delivers to a sink connector of this
// agent (a destination of kind "agent") and returns the target's reference. An order
// the sink accepted or refused for good is answered with an order.ack (acknowledgeOrder)
// before the control plane hears the outcome.
func (a *Agent) sinkWrite(ctx context.Context, connector string, ev *eventv1.Event) (string, error) {
	if a.host == nil {
		return "", fmt.Errorf("write to %q: %w", connector, pluginhost.ErrUnknown)
	}
	res, err := a.host.Write(ctx, connector, []*eventv1.Event{ev})
	if err != nil {
		return "", err
	}
	if len(res) != 1 {
		return "", fmt.Errorf("write to %q: the connector answered %d results for 1 event", connector, len(res))
	}
	if a.cfg.AfterSinkWrite != nil {
		a.cfg.AfterSinkWrite(connector, ev)
	}
	if err := a.acknowledgeOrder(ctx, connector, ev, res[0]); err != nil {
		return "", err
	}
	if res[0].Err != nil {
		return "", fmt.Errorf("write to %q: %w", connector, res[0].Err)
	}
	return res[0].Ref, nil
}

// OrderAck is the ERP's answer to order event ev, as the sink's result r gives it: an
// order.ack "accepted" with the number the ERP gave the order (r.Ref), or "rejected"
// with the ERP's reason (r.Err wrapping sdk.ErrPermanent). Nil when there is nothing to
// answer: ev is not an order, the write failed in a way a retry may fix, or the sink
// accepted it without a number (it is not an ERP that numbers orders).
//
// The ack's id is canonical.OrderAckEventID of the order's Crossdock id and its content
// depends only on the order and the ERP's answer (no time of its own: occurred_at is
// not part of an event's identity), so the ack published again after the agent died
// between the ERP write and the ack is the same event and committed once.
func OrderAck(ev *eventv1.Event, r sdk.WriteResult) *eventv1.Event {
	o := ev.GetOrder()
	if o == nil {
		return nil
	}
	id := o.GetOrderNumber()
	if id == "" && o.GetPartner() != "" && o.GetPurchaseOrderNumber() != "" {
		id = canonical.OrderID(o.GetPartner(), o.GetPurchaseOrderNumber())
	}
	if id == "" {
		return nil
	}
	ack := &eventv1.OrderAck{OrderNumber: id, Partner: o.GetPartner(), PurchaseOrderNumber: o.GetPurchaseOrderNumber(),
		OrderDate: o.GetOrderDate()}
	switch {
	case r.Err == nil && r.Ref != "":
		ack.Status, ack.ErpOrderNumber = "accepted", r.Ref
	case r.Err != nil && errors.Is(r.Err, sdk.ErrPermanent):
		ack.Status, ack.ErpOrderNumber, ack.Message = "rejected", r.Ref, sdk.Reason(r.Err)
	default:
		return nil
	}
	aid := canonical.OrderAckEventID(id)
	return &eventv1.Event{Id: aid, Type: canonical.TypeOrderAck, Keys: map[string]string{"order": id},
		Source: &eventv1.Source{Position: aid}, Payload: &eventv1.Event_OrderAck{OrderAck: ack}}
}

// acknowledgeOrder publishes the order.ack for an order the sink wrote (or refused for
// good) into this agent's outbox, from where it is committed like any captured event,
// so routes can take it back to the channel the order came from. If it cannot be
// published the write is reported failed and retried: the sink is idempotent by event id
// and answers the same, and the ack has the same id (see OrderAck).
func (a *Agent) acknowledgeOrder(ctx context.Context, connector string, ev *eventv1.Event, r sdk.WriteResult) error {
	ack := OrderAck(ev, r)
	if ack == nil {
		return nil
	}
	if _, err := a.Publish(ctx, connector, []*eventv1.Event{ack}); err != nil {
		return fmt.Errorf("publish order.ack for order %s (the ERP answered %s; the write is retried and answers the same): %w",
			ack.GetOrderAck().GetOrderNumber(), ack.GetOrderAck().GetStatus(), err)
	}
	a.logger.Info("order acknowledged", "order", ack.GetOrderAck().GetOrderNumber(), "status", ack.GetOrderAck().GetStatus(),
		"erp_order_number", ack.GetOrderAck().GetErpOrderNumber(), "connector", connector)
	return nil
}
