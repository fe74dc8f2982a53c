package testutil

import "sync"

// Gate holds callers of Wait while it is closed: fault injection, e.g. a source that
// holds a reader back while the data it reads moves on. The zero Gate is open.
type Gate struct {
	mu sync.Mutex
	ch chan struct{} // nil: open
}

// Close makes later Waits block until Open.
func (g *Gate) Close() { g.mu.Lock(); g.ch = make(chan struct{}); g.mu.Unlock() }

// Open releases the waiting callers; Waits pass until the next Close.
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

// Wait returns at once when the gate is open, else when it opens.
func (g *Gate) Wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}
