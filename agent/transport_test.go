package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// relay forwards TCP and UDP on one port of 127.0.0.1 to a control plane. It is fault
// injection: UDP is dropped until udpOpen is set, a path where QUIC is blocked (as
// while a restarting server's HTTP/3 is not up yet) and TCP works.
type relay struct {
	addr    string
	udpOpen atomic.Bool
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if u, err := net.ListenPacket("udp", l.Addr().String()); err == nil {
			tl, ul = l, u
			break
		}
		l.Close()
	}
	if tl == nil {
		t.Fatal("no port free on both TCP and UDP")
	}
	r := &relay{addr: tl.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { tl.Close(); ul.Close(); wg.Wait() })
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	go func() {
		defer wg.Done()
		ups := map[string]net.Conn{}
		defer func() {
			for _, u := range ups {
				u.Close()
			}
		}()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			if !r.udpOpen.Load() {
				continue
			}
			up, ok := ups[from.String()]
			if !ok {
				if up, err = net.Dial("udp", target); err != nil {
					continue
				}
				ups[from.String()] = up
				go func() {
					b := make([]byte, 64<<10)
					for {
						n, err := up.Read(b)
						if err != nil {
							return
						}
						if _, err := ul.WriteTo(b[:n], from); err != nil && errors.Is(err, net.ErrClosed) {
							return
						}
					}
				}()
			}
			_, _ = up.Write(buf[:n])
		}
	}()
	return r
}

// TestReturnsToHTTP3 connects an agent while QUIC to the control plane is blocked, so
// it streams over HTTP/2, then unblocks QUIC: the agent must move back to HTTP/3 by
// itself within a few HTTP3Retry periods, and keep committing events.
func TestReturnsToHTTP3(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	r := startRelay(t, srv.Addr())
	a, err := newAgent(t, srv, t.TempDir(), srv.Token(t, time.Minute, "h3-back"), func(c *agent.Config) {
		c.Servers = []string{r.addr}
		c.HTTP3Retry = 300 * time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)
	controlplanetest.WaitFor(t, 30*time.Second, "the agent connected over HTTP/2 while QUIC is blocked", func() bool {
		st := a.Status()
		return st.GetUplinkState() == "connected" && st.GetTransport() == "h2"
	})
	if _, err := a.Publish(context.Background(), "", []*eventv1.Event{inventory("H-1", 1)}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "event committed over HTTP/2", func() bool { return srv.Store().Ledger().LastSeq() == 1 })

	r.udpOpen.Store(true)
	controlplanetest.WaitFor(t, 15*time.Second, "the agent back on HTTP/3", func() bool {
		st := a.Status()
		return st.GetUplinkState() == "connected" && st.GetTransport() == "h3"
	})
	if _, err := a.Publish(context.Background(), "", []*eventv1.Event{inventory("H-2", 2)}); err != nil {
		t.Fatal(err)
	}
	controlplanetest.WaitFor(t, 30*time.Second, "event committed over HTTP/3", func() bool { return srv.Store().Ledger().LastSeq() == 2 })
}
