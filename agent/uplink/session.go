package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/crossdock/crossdock/internal/platform/ratelog"
	"github.com/crossdock/crossdock/internal/tracing"

	"github.com/crossdock/crossdock/internal/wire"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// session runs one connection until it fails.
func (u *Uplink) session(ctx context.Context, server string) error {
	u.setStatus(func(s *Status) { s.State, s.Server = StateConnecting, server })
	stream, welcome, transport, closeFn, err := u.dial(ctx, server)
	if err != nil {
		return err
	}
	defer closeFn()
	// The control plane never acknowledges what this outbox has not written: a
	// committed seq beyond it would delete events that were never sent.
	if last := u.cfg.Outbox.Stats().LastSeq; welcome.GetCommittedSeq() > last {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
		return fmt.Errorf("%w: the control plane says seq %d of this agent is committed, but its outbox only reaches seq %d; nothing is deleted. "+
			"The agent's identity belongs to another outbox: re-enroll this one with `crossdock token create --name ... --replace`",
			ErrProtocol, welcome.GetCommittedSeq(), last)
	}
	u.logger.Info("uplink connected", "server", server, "transport", transport, "node", welcome.GetNodeId(), "committed_seq", welcome.GetCommittedSeq())
	u.setStatus(func(s *Status) {
		s.State, s.Transport, s.ConnectedSince, s.LastError, s.Refused = StateConnected, transport, time.Now(), "", ""
		s.CommittedSeq = welcome.GetCommittedSeq()
	})
	if err := u.cfg.Outbox.Ack(welcome.GetCommittedSeq()); err != nil {
		return fmt.Errorf("uplink: ack outbox: %w", err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	win := &window{slots: make(chan struct{}, u.window()), sent: welcome.GetCommittedSeq()}
	out := &sender{stream: stream, transport: transport, spans: newBatchSpans()}
	errc := make(chan error, 5)
	go func() { errc <- u.send(sctx, out, welcome.GetCommittedSeq()+1, win) }()
	go func() { errc <- u.receive(sctx, stream, out, win) }()
	go func() { errc <- win.watch(sctx, u.cfg.AckTimeout) }()
	go func() { errc <- u.renewLoop(sctx, out) }()
	running := 4
	if transport == TransportH2 && !u.cfg.DisableQUIC {
		running++
		go func() { errc <- u.probeHTTP3(sctx, server) }()
	}
	err = <-errc
	cancel()
	out.spans.end(err)
	out.closed.Store(true) // sink results still being written are not sent
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
	for range running - 1 {
		<-errc
	}
	return err
}

// renewLoop asks for a new certificate on the stream when the Renewal says it is due:
// at connect and every RenewCheck. The answer arrives in receive.
func (u *Uplink) renewLoop(ctx context.Context, out *sender) error {
	if u.cfg.Renewal == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTicker(u.cfg.RenewCheck)
	defer t.Stop()
	for {
		if u.cfg.Renewal.Due() {
			csr, err := u.cfg.Renewal.CSR()
			if err != nil {
				u.logger.Error("certificate renewal: make a key and CSR", "err", err)
			} else if err := out.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Renew{Renew: &uplinkv1.RenewRequest{CsrPem: string(csr)}}}); err != nil {
				return fmt.Errorf("uplink: send renewal: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sender serialises the sends of one stream: batches and reports from send, sink
// results from the sink writes.
type sender struct {
	mu        sync.Mutex
	closed    atomic.Bool
	stream    *connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse]
	transport string
	spans     *batchSpans // nil when tracing is off
}

func (s *sender) Send(m *uplinkv1.StreamRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return errors.New("uplink: stream closed")
	}
	return s.stream.Send(m)
}

func (u *Uplink) send(ctx context.Context, stream *sender, cursor uint64, window *window) error {
	ob := u.cfg.Outbox
	var bw wire.BatchWriter
	// Connector reports share the stream with batches, so this goroutine sends both.
	var changed <-chan struct{}
	var refresh <-chan time.Time
	report := func() error {
		changed = u.cfg.ConnectorsChanged()
		rep := &uplinkv1.ConnectorReport{Connectors: u.cfg.Connectors()}
		if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Connectors{Connectors: rep}}); err != nil {
			return fmt.Errorf("uplink: send connector report: %w", err)
		}
		if u.cfg.Fleet == nil {
			return nil
		}
		cr, health := u.cfg.Fleet()
		if cr != nil {
			if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_ConfigReport{ConfigReport: cr}}); err != nil {
				return fmt.Errorf("uplink: send config report: %w", err)
			}
		}
		if health != nil {
			if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Health{Health: health}}); err != nil {
				return fmt.Errorf("uplink: send health: %w", err)
			}
		}
		if u.cfg.Upgrade == nil {
			return nil
		}
		if r := u.cfg.Upgrade(); r != nil {
			if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_UpgradeReport{UpgradeReport: r}}); err != nil {
				return fmt.Errorf("uplink: send upgrade report: %w", err)
			}
		}
		return nil
	}
	if u.cfg.Connectors != nil && u.cfg.ConnectorsChanged != nil {
		t := time.NewTicker(u.cfg.ReportInterval)
		defer t.Stop()
		refresh = t.C
		if err := report(); err != nil {
			return err
		}
	}
	for {
		select {
		case <-changed:
			if err := report(); err != nil {
				return err
			}
		case <-refresh:
			if err := report(); err != nil {
				return err
			}
		default:
		}
		notify := ob.Notify()
		bw.Reset()
		var (
			n    int
			last uint64
			err  error
		)
		if bs := stream.spans; bs != nil {
			n, last, err = ob.ReadFunc(cursor, u.batchMaxEvents(), u.cfg.BatchMaxBytes, func(seq uint64, rec []byte) error {
				bs.note(rec)
				return bw.Add(seq, rec)
			})
		} else {
			n, last, err = ob.ReadFunc(cursor, u.batchMaxEvents(), u.cfg.BatchMaxBytes, bw.Add)
		}
		if err != nil {
			return fmt.Errorf("uplink: read outbox: %w", err)
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-notify:
				continue
			case <-changed:
				if err := report(); err != nil {
					return err
				}
				continue
			case <-refresh:
				if err := report(); err != nil {
					return err
				}
				continue
			}
		}
		if err := window.acquire(ctx, last); err != nil {
			return err
		}
		// Connect copies the request into its own buffer: bw's is free again after Send.
		req := &uplinkv1.StreamRequest{}
		req.ProtoReflect().SetUnknown(bw.Request())
		stream.spans.start(cursor, last, n, stream.transport)
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("uplink: send batch: %w", err)
		}
		cursor = last + 1
	}
}

func (u *Uplink) receive(ctx context.Context, stream *connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse], out *sender, window *window) error {
	var writes sync.WaitGroup
	defer writes.Wait()
	slots := make(chan struct{}, max(u.cfg.MaxSinkWrites, 1))
	for {
		msg, err := stream.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uplink: receive: %w", err)
		}
		if w := msg.GetSinkWrite(); w != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			writes.Add(1)
			go func() {
				defer func() { <-slots; writes.Done() }()
				// A result that cannot be sent (stream gone) is lost; the control plane
				// fails the write when the stream ends and sends it again, and the
				// connector's idempotency by event id makes that harmless.
				_ = out.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_SinkResult{SinkResult: u.sinkWrite(ctx, w)}})
			}()
			continue
		}
		if r := msg.GetRenewed(); r != nil {
			u.installRenewed(r)
			continue
		}
		if c := msg.GetConfig(); c != nil {
			if u.cfg.OnConfig != nil {
				u.cfg.OnConfig(c)
			}
			continue
		}
		if c := msg.GetUpgrade(); c != nil {
			if u.cfg.OnUpgrade != nil {
				u.cfg.OnUpgrade(c)
			}
			continue
		}
		ack := msg.GetAck()
		if ack == nil {
			continue
		}
		// Checked before the outbox deletes anything.
		if err := window.release(ack.GetCommittedSeq()); err != nil {
			return err
		}
		if len(ack.GetConflicts()) > 0 && u.cfg.Conflicts != nil {
			u.cfg.Conflicts(ack.GetConflicts())
		}
		if err := u.cfg.Outbox.Ack(ack.GetCommittedSeq()); err != nil {
			return fmt.Errorf("uplink: ack outbox: %w", err)
		}
		out.spans.acked(ack)
		u.setStatus(func(s *Status) { s.CommittedSeq = ack.GetCommittedSeq() })
	}
}

// installRenewed installs a renewed certificate; a refusal is logged and retried at
// the next check.
func (u *Uplink) installRenewed(r *uplinkv1.Renewed) {
	if u.cfg.Renewal == nil {
		return
	}
	if r.GetError() != "" {
		u.logger.Error("certificate renewal refused by the control plane", "err", r.GetError())
		return
	}
	if err := u.cfg.Renewal.Install([]byte(r.GetCertificatePem())); err != nil {
		u.logger.Error("certificate renewal: install the new certificate", "err", err)
		return
	}
	u.logger.Info("certificate renewed")
}

// sinkWrite runs one SinkWrite through the configured Sink.
func (u *Uplink) sinkWrite(ctx context.Context, w *uplinkv1.SinkWrite) *uplinkv1.SinkResult {
	r := &uplinkv1.SinkResult{RequestId: w.GetRequestId()}
	if u.cfg.Sink == nil {
		r.Error, r.Permanent = "this agent has no sink connectors", true
		return r
	}
	if w.GetEvent() == nil {
		r.Error, r.Permanent = "sink write without an event", true
		return r
	}
	if tracing.Enabled() {
		// A child of the control plane's delivery attempt, whose context the event
		// carries; an order.ack the write publishes continues the trace.
		var span trace.Span
		ctx, span = tracing.Tracer().Start(tracing.Parent(ctx, w.GetEvent().GetTrace()), tracing.SpanSinkWrite,
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(tracing.EventAttrs(w.GetEvent(), tracing.AttrConnector.String(w.GetConnector()), tracing.AttrMessageID.String(w.GetMessageId()))...))
		defer span.End()
		defer func() {
			if r.Error != "" {
				span.SetStatus(codes.Error, r.Error)
			}
		}()
	}
	ref, err := u.cfg.Sink(ctx, w.GetConnector(), w.GetEvent())
	if err != nil {
		r.Error = err.Error()
		r.Permanent = u.cfg.IsPermanent != nil && u.cfg.IsPermanent(err)
		args := []any{"connector", w.GetConnector(), "message_id", w.GetMessageId(), "event_type", w.GetEvent().GetType(), "event_id", w.GetEvent().GetId()}
		args = append(args, ratelog.Keys(w.GetEvent().GetKeys())...)
		u.logs.Log(u.logger, slog.LevelWarn, "sink:"+w.GetConnector(), "sink write failed", append(args, "permanent", r.Permanent, "err", err)...)
		return r
	}
	r.Ref = ref
	return r
}
