package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/demo/sample"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// directClient speaks UplinkService.Stream like an agent's uplink does (mutual TLS with
// an enrolled agent certificate, hello/welcome, numbered batches, a window of batches in
// flight, acks carrying the committed seq), but sends batches built in memory instead
// of reading them from a Badger outbox: it measures what the cluster can commit when
// the load generator's own disk and CPU are out of the way.
type directClient struct {
	id     string
	client uplinkv1connect.UplinkServiceClient
	close  func()
	gen    *sample.Inventory
	codec  *preencodedCodec
	sent   uint64 // the highest seq prepared for a session
}

// preencodedCodec is the direct streams' protobuf codec: batches are encoded when they
// are prepared, before the timed run, and sent as those bytes, the way the peer's
// publishers send a ready payload. Anything else is encoded as usual.
type preencodedCodec struct{ encoded sync.Map } // *uplinkv1.StreamRequest -> []byte

func (*preencodedCodec) Name() string { return "proto" }

func (c *preencodedCodec) Marshal(m any) ([]byte, error) {
	if b, ok := c.encoded.Load(m); ok {
		return b.([]byte), nil
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("clusterbench codec: %T is not a protobuf message", m)
	}
	return proto.Marshal(pm)
}

func (*preencodedCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("clusterbench codec: %T is not a protobuf message", m)
	}
	return proto.Unmarshal(b, pm)
}

const directConnector = "direct"

func newDirectClient(ctx context.Context, c *cluster, server, name string, seed uint64, noQUIC bool) (*directClient, error) {
	tokRes, err := c.admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(5 * time.Minute), AgentName: name}))
	if err != nil {
		return nil, fmt.Errorf("token for %s: %w", name, err)
	}
	tok, err := pki.ParseToken(tokRes.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(name)
	if err != nil {
		return nil, err
	}
	etr := &http.Transport{TLSClientConfig: pki.PinnedTLSConfig(tok.CAPin), ForceAttemptHTTP2: true}
	defer etr.CloseIdleConnections()
	res, err := uplinkv1connect.NewUplinkServiceClient(&http.Client{Transport: etr, Timeout: 30 * time.Second}, "https://"+server).
		Enroll(ctx, connect.NewRequest(&uplinkv1.EnrollRequest{Token: tokRes.Msg.GetToken(), CsrPem: string(csrPEM), AgentName: name}))
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	cert, err := tls.X509KeyPair([]byte(res.Msg.GetCertificatePem()), keyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(res.Msg.GetCaPem())) {
		return nil, errors.New("enrollment returned no CA certificate")
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}
	d := &directClient{id: res.Msg.GetAgentId(), gen: sample.NewInventory(seed, sample.DefaultWarehouses, 2000, time.Now())}
	var hc *http.Client
	if noQUIC {
		conf.NextProtos = []string{"h2"}
		tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
		hc, d.close = &http.Client{Transport: tr}, tr.CloseIdleConnections
	} else {
		conf.NextProtos = []string{http3.NextProtoH3}
		tr := &http3.Transport{TLSClientConfig: conf, QUICConfig: &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second}}
		hc, d.close = &http.Client{Transport: tr}, func() { tr.Close() }
	}
	d.codec = &preencodedCodec{}
	d.client = uplinkv1connect.NewUplinkServiceClient(hc, "https://"+server, connect.WithCodec(d.codec))
	return d, nil
}

// directSession is one open stream with its batches built and ready to send.
type directSession struct {
	stream  *connect.BidiStreamForClient[uplinkv1.StreamRequest, uplinkv1.StreamResponse]
	cancel  func()
	batches []*uplinkv1.StreamRequest
	lasts   []uint64
	forget  func() // drops the batches' encodings
}

// open connects and prepares n events in batches of batchSize, numbered after the
// committed seq the control plane reports.
func (d *directClient) open(ctx context.Context, n, batchSize int) (*directSession, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream := d.client.Stream(sctx)
	// Like an agent, say how far this stream's seqs go: the control plane refuses a
	// stream whose committed seq is beyond it.
	hello := &uplinkv1.Hello{AgentVersion: "clusterbench", OutboxLastSeq: d.sent}
	if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		_, rerr := stream.Receive()
		cancel()
		return nil, errors.Join(err, rerr)
	}
	msg, err := stream.Receive()
	if err != nil {
		cancel()
		return nil, err
	}
	w := msg.GetWelcome()
	if w == nil {
		cancel()
		return nil, errors.New("no welcome")
	}
	s := &directSession{stream: stream, cancel: cancel}
	s.forget = func() {
		for _, b := range s.batches {
			d.codec.encoded.Delete(b)
		}
	}
	seq := w.GetCommittedSeq()
	for i := 0; i < n; i += batchSize {
		b := &uplinkv1.Batch{}
		for range min(batchSize, n-i) {
			ev := d.gen.Next()
			sample.Pad(ev, eventSize)
			prepare(ev, d.id, directConnector)
			seq++
			b.Events = append(b.Events, &uplinkv1.OutboxEvent{Seq: seq, Event: ev})
		}
		req := &uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Batch{Batch: b}}
		enc, err := proto.Marshal(req)
		if err != nil {
			cancel()
			return nil, err
		}
		d.codec.encoded.Store(req, enc)
		s.batches = append(s.batches, req)
		s.lasts = append(s.lasts, seq)
	}
	d.sent = seq
	return s, nil
}

// prepare does what agent.Publish does to an event before it enters the outbox.
func prepare(ev *eventv1.Event, agentID, connector string) {
	canonical.Normalize(ev)
	if ev.Source == nil {
		ev.Source = &eventv1.Source{}
	}
	ev.Source.Agent, ev.Source.Connector = agentID, connector
	ev.Id = canonical.ID(agentID, connector, ev.Source.GetPosition())
}

// run sends every batch with at most window unacknowledged and returns when the last
// one is acknowledged; lat receives each batch's send→ack time.
func (s *directSession) run(window int, lat *latencies) error {
	defer s.forget()
	defer s.cancel()
	slots := make(chan struct{}, window)
	sent := make([]time.Time, len(s.batches))
	var mu sync.Mutex
	sendErr := make(chan error, 1)
	go func() {
		for i, b := range s.batches {
			slots <- struct{}{}
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			if err := s.stream.Send(b); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	// The stream ends with an error when no ack arrives for stallAfter.
	watchdog := time.AfterFunc(stallAfter, s.cancel)
	defer watchdog.Stop()
	next := 0
	for next < len(s.batches) {
		msg, err := s.stream.Receive()
		if err != nil {
			if !watchdog.Stop() {
				err = fmt.Errorf("%w: no ack for %s: %v", errStalled, stallAfter, err)
			}
			select {
			case serr := <-sendErr:
				return errors.Join(err, serr)
			default:
			}
			return err
		}
		ack := msg.GetAck()
		if ack == nil {
			continue
		}
		watchdog.Reset(stallAfter)
		progressed()
		now := time.Now()
		for next < len(s.batches) && s.lasts[next] <= ack.GetCommittedSeq() {
			mu.Lock()
			lat.add(now.Sub(sent[next]))
			mu.Unlock()
			next++
			<-slots
		}
	}
	if err := <-sendErr; err != nil {
		return err
	}
	_ = s.stream.CloseRequest()
	_ = s.stream.CloseResponse()
	return nil
}
