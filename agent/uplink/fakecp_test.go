package uplink_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/internal/protocol"
	"github.com/crossdock/crossdock/internal/testkit/testutil"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// fakeCP is a minimal control plane for the uplink's tests: it speaks UplinkService
// over HTTP/2 with TLS (no QUIC), and its behaviour is set per test. It is a fake for
// fault injection (acks beyond what was sent, a welcome beyond the outbox, redirects,
// acks held back); the real control plane is tested with the agent in agent/.
type fakeCP struct {
	addr string

	mu        sync.Mutex
	committed uint64 // what Welcome says, then the highest seq acknowledged
	received  []uint64
	unacked   []uint64 // last seq of each batch not acknowledged yet
	maxUnack  int
	streams   int
	hellos    []*uplinkv1.Hello

	// Set before the uplink starts.
	window     int    // acknowledge only once this many batches wait (0: each at once)
	redirectTo string // refuse as a follower naming this leader
	ackBeyond  uint64 // acknowledge this seq after the first batch
}

func newFakeCP(t *testing.T, set func(*fakeCP)) (*fakeCP, *tls.Config) {
	t.Helper()
	f := &fakeCP{}
	if set != nil {
		set(f)
	}
	mux := http.NewServeMux()
	mux.Handle(uplinkv1connect.NewUplinkServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.addr = strings.TrimPrefix(srv.URL, "https://")
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return f, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

func (f *fakeCP) Enroll(context.Context, *connect.Request[uplinkv1.EnrollRequest]) (*connect.Response[uplinkv1.EnrollResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("fake control plane"))
}

func (f *fakeCP) DownloadRelease(context.Context, *connect.Request[uplinkv1.DownloadReleaseRequest], *connect.ServerStream[uplinkv1.DownloadReleaseResponse]) error {
	return connect.NewError(connect.CodeUnimplemented, errors.New("fake control plane"))
}

func (f *fakeCP) Stream(ctx context.Context, stream *connect.BidiStream[uplinkv1.StreamRequest, uplinkv1.StreamResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.streams++
	f.hellos = append(f.hellos, first.GetHello())
	redirect, committed := f.redirectTo, f.committed
	f.unacked = nil
	f.mu.Unlock()
	if redirect != "" {
		e := connect.NewError(connect.CodeUnavailable, errors.New("this node is not the leader"))
		e.Meta().Set(protocol.LeaderHeader, redirect)
		return e
	}
	if err := stream.Send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Welcome{Welcome: &uplinkv1.Welcome{CommittedSeq: committed, NodeId: "fake"}}}); err != nil {
		return err
	}
	for {
		msg, err := stream.Receive()
		if err != nil {
			return nil
		}
		b := msg.GetBatch()
		if b == nil || len(b.GetEvents()) == 0 {
			continue
		}
		var acks []*uplinkv1.Ack
		f.mu.Lock()
		for _, e := range b.GetEvents() {
			f.received = append(f.received, e.GetSeq())
		}
		last := b.GetEvents()[len(b.GetEvents())-1].GetSeq()
		f.unacked = append(f.unacked, last)
		f.maxUnack = max(f.maxUnack, len(f.unacked))
		switch {
		case f.ackBeyond != 0:
			acks = append(acks, &uplinkv1.Ack{CommittedSeq: f.ackBeyond})
		case f.window == 0 || len(f.unacked) >= f.window:
			for _, l := range f.unacked {
				acks = append(acks, &uplinkv1.Ack{CommittedSeq: l})
				f.committed = l
			}
			f.unacked = nil
		}
		f.mu.Unlock()
		for _, a := range acks {
			if err := stream.Send(&uplinkv1.StreamResponse{Msg: &uplinkv1.StreamResponse_Ack{Ack: a}}); err != nil {
				return err
			}
		}
	}
}

func (f *fakeCP) seen() (received []uint64, maxUnack, streams int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.received...), f.maxUnack, f.streams
}

// fill opens an outbox holding n events.
func fill(t *testing.T, n int) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.Open(outbox.Options{Dir: filepath.Join(t.TempDir(), "outbox"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	var recs [][]byte
	for i := range n {
		b, err := proto.Marshal(&eventv1.Event{Id: fmt.Sprintf("e%d", i), Type: "item", Payload: &eventv1.Event_Item{Item: &eventv1.Item{Sku: fmt.Sprint(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, b)
	}
	if n > 0 {
		if _, _, err := ob.Append(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	return ob
}

func start(t *testing.T, cfg uplink.Config) *uplink.Uplink {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	u := uplink.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return u
}

func consecutive(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func equal(a, b []uint64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestWindowBoundsBatchesInFlight: the uplink keeps up to Window batches unacknowledged
// (it fills the window) and never more; every event arrives once, in order, and the
// outbox is emptied by the acks.
func TestWindowBoundsBatchesInFlight(t *testing.T) {
	f, tlsConf := newFakeCP(t, func(f *fakeCP) { f.window = 3 })
	ob := fill(t, 60)
	start(t, uplink.Config{Servers: []string{f.addr}, TLS: tlsConf, DisableQUIC: true, Outbox: ob, BatchMaxEvents: 5, Window: 3})
	testutil.WaitFor(t, 20*time.Second, "every event acknowledged", func() bool { return ob.Stats().PendingEvents == 0 })
	got, maxUnack, _ := f.seen()
	if !equal(got, consecutive(1, 60)) {
		t.Fatalf("received %v, want 1..60 once each in order", got)
	}
	if maxUnack != 3 {
		t.Fatalf("at most %d batches were unacknowledged; want the window, 3", maxUnack)
	}
}

// TestResumesFromCommitted: after connecting, the uplink drops what the control plane
// says is committed and sends only the rest.
func TestResumesFromCommitted(t *testing.T) {
	f, tlsConf := newFakeCP(t, func(f *fakeCP) { f.committed = 6 })
	ob := fill(t, 10)
	start(t, uplink.Config{Servers: []string{f.addr}, TLS: tlsConf, DisableQUIC: true, Outbox: ob, Instance: "ob_test"})
	testutil.WaitFor(t, 20*time.Second, "the rest acknowledged", func() bool { return ob.Stats().PendingEvents == 0 })
	if got, _, _ := f.seen(); !equal(got, consecutive(7, 10)) {
		t.Fatalf("received %v, want 7..10", got)
	}
	f.mu.Lock()
	h := f.hellos[0]
	f.mu.Unlock()
	if h.GetOutboxLastSeq() != 10 || h.GetOutboxFirstSeq() != 1 || h.GetOutboxInstance() != "ob_test" {
		t.Fatalf("hello = %v; want the outbox's seqs and instance", h)
	}
}

// TestFollowsLeaderHint: a follower's refusal names the leader; the uplink goes there
// although only the follower is configured.
func TestFollowsLeaderHint(t *testing.T) {
	leader, tlsConf := newFakeCP(t, nil)
	follower, _ := newFakeCP(t, func(f *fakeCP) { f.redirectTo = leader.addr })
	ob := fill(t, 20)
	u := start(t, uplink.Config{Servers: []string{follower.addr}, TLS: tlsConf, DisableQUIC: true, Outbox: ob})
	testutil.WaitFor(t, 20*time.Second, "events delivered to the leader", func() bool { return ob.Stats().PendingEvents == 0 })
	if got, _, _ := leader.seen(); !equal(got, consecutive(1, 20)) {
		t.Fatalf("leader received %v", got)
	}
	if st := u.Status(); st.Server != leader.addr {
		t.Fatalf("status server %q, want the leader %q", st.Server, leader.addr)
	}
}

// TestFallsBackToHTTP2: with no QUIC listener the HTTP/3 attempt times out and the
// uplink streams over HTTP/2.
func TestFallsBackToHTTP2(t *testing.T) {
	f, tlsConf := newFakeCP(t, nil)
	ob := fill(t, 5)
	u := start(t, uplink.Config{Servers: []string{f.addr}, TLS: tlsConf, Outbox: ob, QUICTimeout: 300 * time.Millisecond})
	testutil.WaitFor(t, 20*time.Second, "events delivered", func() bool { return ob.Stats().PendingEvents == 0 })
	if st := u.Status(); st.Transport != uplink.TransportH2 || st.State != uplink.StateConnected {
		t.Fatalf("status %+v; want connected over h2", st)
	}
}

// TestAckBeyondSentIsProtocolError: an ack of a seq the stream never sent stops the
// stream loudly and deletes nothing.
func TestAckBeyondSentIsProtocolError(t *testing.T) {
	f, tlsConf := newFakeCP(t, func(f *fakeCP) { f.ackBeyond = 1000 })
	ob := fill(t, 10)
	u := start(t, uplink.Config{Servers: []string{f.addr}, TLS: tlsConf, DisableQUIC: true, Outbox: ob, BatchMaxEvents: 4})
	testutil.WaitFor(t, 20*time.Second, "the stream refused as a protocol error", func() bool {
		return strings.Contains(u.Status().Refused, "protocol error")
	})
	if s := ob.Stats(); s.PendingEvents != 10 {
		t.Fatalf("outbox holds %d events; an ack beyond what was sent must delete none", s.PendingEvents)
	}
}

// TestWelcomeBeyondOutboxRefused: a control plane that says more is committed than the
// outbox ever held (another outbox's seq space) is refused before anything is deleted.
func TestWelcomeBeyondOutboxRefused(t *testing.T) {
	f, tlsConf := newFakeCP(t, func(f *fakeCP) { f.committed = 500 })
	ob := fill(t, 10)
	u := start(t, uplink.Config{Servers: []string{f.addr}, TLS: tlsConf, DisableQUIC: true, Outbox: ob})
	testutil.WaitFor(t, 20*time.Second, "the welcome refused", func() bool {
		return errors.Is(errors.New(u.Status().Refused), uplink.ErrProtocol) || strings.Contains(u.Status().Refused, "only reaches seq 10")
	})
	if s := ob.Stats(); s.PendingEvents != 10 {
		t.Fatalf("outbox holds %d events; want all 10", s.PendingEvents)
	}
	if got, _, _ := f.seen(); len(got) != 0 {
		t.Fatalf("sent %v after a refused welcome", got)
	}
}
