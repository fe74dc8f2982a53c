package controlplanetest

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Faults injects network partitions between test nodes' raft traffic. It exists only
// for fault injection: each node's real (mutual TLS over TCP) stream layer is wrapped,
// and while two nodes are partitioned neither can dial the other and the connections
// already open between them are closed.
type Faults struct {
	mu      sync.Mutex
	blocked map[[2]string]bool
	conns   map[string][]*trackedConn // by dialing node's address
}

// NewFaults returns a fault injector with no partitions.
func NewFaults() *Faults {
	return &Faults{blocked: map[[2]string]bool{}, conns: map[string][]*trackedConn{}}
}

// Wrap puts a node's stream layer under the injector.
func (f *Faults) Wrap(l raft.StreamLayer) raft.StreamLayer {
	return &faultyLayer{StreamLayer: l, f: f, self: l.Addr().String()}
}

// Partition cuts raft traffic between every node in a and every node in b (raft
// addresses), both ways.
func (f *Faults) Partition(a, b []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			f.blocked[[2]string{x, y}] = true
			f.blocked[[2]string{y, x}] = true
		}
	}
	for from, cs := range f.conns {
		for _, c := range cs {
			if f.blocked[[2]string{from, c.to}] {
				c.Close()
			}
		}
	}
}

// Heal removes every partition.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = map[[2]string]bool{}
}

type faultyLayer struct {
	raft.StreamLayer
	f    *Faults
	self string
}

var errPartitioned = errors.New("controlplanetest: partitioned (injected fault)")

func (l *faultyLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	l.f.mu.Lock()
	blocked := l.f.blocked[[2]string{l.self, string(addr)}]
	l.f.mu.Unlock()
	if blocked {
		return nil, errPartitioned
	}
	c, err := l.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, to: string(addr)}
	l.f.mu.Lock()
	l.f.conns[l.self] = append(l.f.conns[l.self], tc)
	l.f.mu.Unlock()
	return tc, nil
}

type trackedConn struct {
	net.Conn
	to string
}
