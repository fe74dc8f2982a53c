package benchkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/demo/sample"
	"github.com/crossdock/crossdock/internal/pki"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// EventSize is the encoded size the generated events are padded to.
const EventSize = 256

// Loader speaks UplinkService.Stream like an agent's uplink (mutual TLS with an
// enrolled agent certificate, hello/welcome, numbered batches, a window of batches in
// flight, acks carrying the committed seq), generating inventory events as it goes
// instead of reading an outbox. Committed counts every event acknowledged.
type Loader struct {
	id        string
	client    uplinkv1connect.UplinkServiceClient
	conf      *tls.Config
	close     func()
	gen       *sample.Inventory
	sent      uint64
	Committed atomic.Int64

	mu  sync.Mutex
	lat []Sample
}

// Sample is one batch's send→ack time, stamped with when the ack arrived.
type Sample struct {
	At  time.Time
	Lat time.Duration
}

// NewLoader enrolls an agent named name through server (over HTTP/2) and returns a
// loader streaming as that agent.
func NewLoader(ctx context.Context, c *Cluster, server, name string, seed uint64) (*Loader, error) {
	tokRes, err := c.Admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_AGENT, Ttl: durationpb.New(5 * time.Minute), AgentName: name}))
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
	l := &Loader{id: res.Msg.GetAgentId(), gen: sample.NewInventory(seed, sample.DefaultWarehouses, 2000, time.Now()),
		conf: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, NextProtos: []string{"h2"}}}
	l.Connect(server)
	return l, nil
}

// NewLoaderRetry is NewLoader at the current leader, tried again for up to timeout while
// there is no leader (an election on a busy machine).
func NewLoaderRetry(ctx context.Context, c *Cluster, name string, seed uint64, timeout time.Duration) (*Loader, error) {
	var l *Loader
	var err error
	perr := Poll(ctx, 250*time.Millisecond, timeout, "a leader to enroll "+name, func() bool {
		var leader *Node
		if leader, err = c.Leader(ctx); err != nil {
			return false
		}
		l, err = NewLoader(ctx, c, leader.API, name, seed)
		return err == nil
	})
	if perr != nil {
		return nil, errors.Join(perr, err)
	}
	return l, nil
}

// Connect points the loader at another node (the new leader after an election), as an
// agent moves to another address.
func (l *Loader) Connect(server string) {
	if l.close != nil {
		l.close()
	}
	tr := &http.Transport{TLSClientConfig: l.conf, ForceAttemptHTTP2: true}
	l.close = tr.CloseIdleConnections
	l.client = uplinkv1connect.NewUplinkServiceClient(&http.Client{Transport: tr}, "https://"+server)
}

// Close releases the loader's connections.
func (l *Loader) Close() { l.close() }

// RunN commits n more events at rate events/s (0: as fast as acknowledged),
// reconnecting to the leader like RunResilient when the stream ends early (at most 20
// times).
func (l *Loader) RunN(ctx context.Context, c *Cluster, n, batch, window int, rate float64) error {
	target := l.Committed.Load() + int64(n)
	for tries := 0; ; tries++ {
		left := target - l.Committed.Load()
		if left <= 0 {
			return nil
		}
		err := l.Run(ctx, int(left), batch, window, rate)
		if err == nil || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if tries >= 20 {
			return err
		}
		var leader *Node
		if perr := Poll(ctx, 100*time.Millisecond, 5*time.Minute, "a leader", func() bool {
			var lerr error
			leader, lerr = c.Leader(ctx)
			return lerr == nil
		}); perr != nil {
			return errors.Join(err, perr)
		}
		l.Connect(leader.API)
	}
}

// RunResilient is Run that, like an agent, reconnects when the stream ends before ctx
// does: it waits for a leader, points the loader at it and goes on (the events of the
// interrupted batches are not re-sent; the generator moves on). Each interruption is
// reported to onErr.
func (l *Loader) RunResilient(ctx context.Context, c *Cluster, batch, window int, rate float64, onErr func(error)) {
	for ctx.Err() == nil {
		err := l.Run(ctx, 0, batch, window, rate)
		if ctx.Err() != nil {
			return
		}
		if onErr != nil {
			onErr(err)
		}
		var leader *Node
		_ = Poll(ctx, 100*time.Millisecond, 5*time.Minute, "a leader", func() bool {
			var lerr error
			leader, lerr = c.Leader(ctx)
			return lerr == nil || ctx.Err() != nil
		})
		if leader != nil {
			l.Connect(leader.API)
		}
	}
}

// Latencies returns the samples acknowledged since the last call and forgets them.
func (l *Loader) Latencies() []Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lat
	l.lat = nil
	return out
}

// Run streams n events (n <= 0: until ctx ends) in batches of batch with at most window
// batches unacknowledged, at rate events/s (rate <= 0: as fast as acks allow). It
// returns when every sent batch is acknowledged, or with ctx's end.
func (l *Loader) Run(ctx context.Context, n, batch, window int, rate float64) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := l.client.Stream(sctx)
	hello := &uplinkv1.Hello{AgentVersion: "benchkit", OutboxLastSeq: l.sent}
	if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		_, rerr := stream.Receive()
		return errors.Join(err, rerr)
	}
	msg, err := stream.Receive()
	if err != nil {
		return fmt.Errorf("uplink hello: %w", err)
	}
	w := msg.GetWelcome()
	if w == nil {
		return errors.New("uplink: no welcome")
	}
	seq := w.GetCommittedSeq()
	type inflight struct {
		last uint64
		n    int
		at   time.Time
	}
	slots := make(chan inflight, window)
	sendErr := make(chan error, 1)
	go func() {
		defer close(slots)
		start := time.Now()
		sentEvents := 0
		for n <= 0 || sentEvents < n {
			k := batch
			if n > 0 {
				k = min(k, n-sentEvents)
			}
			if rate > 0 {
				due := start.Add(time.Duration(float64(sentEvents+k) / rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-sctx.Done():
						sendErr <- nil
						return
					}
				}
			}
			b := &uplinkv1.Batch{}
			for range k {
				ev := l.gen.Next()
				sample.Pad(ev, EventSize)
				prepare(ev, l.id, "bench")
				seq++
				b.Events = append(b.Events, &uplinkv1.OutboxEvent{Seq: seq, Event: ev})
			}
			it := inflight{last: seq, n: k, at: time.Now()}
			select {
			case slots <- it:
			case <-sctx.Done():
				sendErr <- nil
				return
			}
			if err := stream.Send(&uplinkv1.StreamRequest{Msg: &uplinkv1.StreamRequest_Batch{Batch: b}}); err != nil {
				sendErr <- err
				return
			}
			l.sent = seq
			sentEvents += k
		}
		sendErr <- nil
	}()
	var acked uint64
	for it := range slots {
		for acked < it.last {
			msg, err := stream.Receive()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				select {
				case serr := <-sendErr:
					return errors.Join(err, serr)
				default:
				}
				return fmt.Errorf("uplink: %w", err)
			}
			if ack := msg.GetAck(); ack != nil {
				acked = max(acked, ack.GetCommittedSeq())
			}
		}
		now := time.Now()
		l.Committed.Add(int64(it.n))
		l.mu.Lock()
		l.lat = append(l.lat, Sample{At: now, Lat: now.Sub(it.at)})
		l.mu.Unlock()
	}
	_ = stream.CloseRequest()
	_ = stream.CloseResponse()
	if ctx.Err() != nil {
		return nil
	}
	return <-sendErr
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

// Percentile returns the p-th percentile (0..100) of the samples' latencies.
func Percentile(s []Sample, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	d := make([]time.Duration, len(s))
	for i, x := range s {
		d[i] = x.Lat
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d)-1) * p / 100)
	return d[i]
}

// Slope is the least-squares slope of ys over xs.
func Slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}
