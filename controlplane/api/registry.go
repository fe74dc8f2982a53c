package api

import (
	"sync"
	"time"
)

// Conn is a live agent stream on this node.
type Conn struct {
	AgentID    string
	Transport  string
	RemoteAddr string
	Since      time.Time
	LastSeen   time.Time
}

// Registry tracks the agent streams connected to this node.
type Registry struct {
	mu    sync.Mutex
	conns map[string]*Conn
	gen   map[string]uint64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{conns: map[string]*Conn{}, gen: map[string]uint64{}}
}

// Add records a stream and returns a func that removes it, unless a newer stream of
// the same agent replaced it meanwhile.
func (r *Registry) Add(c Conn) (touch func(), remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen[c.AgentID]++
	g := r.gen[c.AgentID]
	cp := c
	r.conns[c.AgentID] = &cp
	touch = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.gen[c.AgentID] == g {
			r.conns[c.AgentID].LastSeen = time.Now()
		}
	}
	remove = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.gen[c.AgentID] == g {
			delete(r.conns, c.AgentID)
		}
	}
	return touch, remove
}

// Get returns the live stream of an agent, if any.
func (r *Registry) Get(agentID string) (Conn, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[agentID]
	if !ok {
		return Conn{}, false
	}
	return *c, true
}
