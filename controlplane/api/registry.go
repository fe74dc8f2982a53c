package api

import (
	"context"
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
	// Version and OutboxLastSeq are from the agent's Hello: its build and the newest
	// seq in its outbox when the stream opened (the console's backlog at connect).
	Version       string
	OutboxLastSeq uint64

	// end stops the stream, with the reason; nil when the stream cannot be stopped.
	end context.CancelCauseFunc
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
// the same agent replaced it meanwhile. An agent has one stream at a time: a stream of
// the same agent already here is ended (end called with ErrSuperseded's reason), and
// end ends this one when a newer one arrives or the agent is kicked.
func (r *Registry) Add(c Conn, end context.CancelCauseFunc) (touch func(), remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.conns[c.AgentID]; ok && old.end != nil {
		old.end(&SupersededError{By: c.RemoteAddr, Transport: c.Transport})
	}
	c.end = end
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

// Conns returns the live streams on this node (metrics).
func (r *Registry) Conns() []Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Conn, 0, len(r.conns))
	for _, c := range r.conns {
		cp := *c
		cp.end = nil
		out = append(out, cp)
	}
	return out
}

// Kick ends the live stream of an agent, if any, with cause.
func (r *Registry) Kick(agentID string, cause error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[agentID]
	if ok && c.end != nil {
		c.end(cause)
	}
	return ok
}

// SupersededError ends an agent's stream when the same agent opened another one: one
// stream per agent identity, the newest wins.
type SupersededError struct {
	By, Transport string
}

func (e *SupersededError) Error() string {
	return "a newer stream of this agent identity was opened from " + e.By + " (" + e.Transport + "); " +
		"only one stream per agent is served. If two agents run with the same identity (a copied data dir), stop one; " +
		"a second site needs its own enrollment token"
}
