package edi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/crossdock/crossdock/internal/x12"
	"github.com/crossdock/crossdock/plugins/sdk"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// state is the connector's source position: JSON committed by the agent in its outbox
// with each batch, so control numbers and the interchanges seen survive any restart.
type state struct {
	V int `json:"v"`
	// Reserved is, per partner, the highest control number used or reserved. After a
	// restart numbering continues above it: a number is never handed out twice (the
	// rest of a reserved block is skipped; X12 allows gaps).
	Reserved map[string]uint64 `json:"r,omitempty"`
	// Seen lists, per partner, the last interchanges received, oldest first.
	Seen map[string][]seen `json:"s,omitempty"`
}

// seen is one interchange received.
type seen struct {
	Control string `json:"k"`           // ISA13, leading zeros removed
	File    string `json:"f"`           // SHA-256 of the file it came in (16 hex digits)
	Ack     uint64 `json:"a,omitempty"` // the first control number of our acknowledgement; 0: none owed
	At      int64  `json:"t,omitempty"` // the acknowledgement's time (Unix seconds)
	Done    bool   `json:"d,omitempty"` // acknowledgement written and file moved
}

// reserveBlock is how many control numbers the sink reserves per commit.
const reserveBlock = 100

func parseState(from string) (*state, error) {
	st := &state{V: 1, Reserved: map[string]uint64{}, Seen: map[string][]seen{}}
	if from == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(from), st); err != nil {
		return nil, sdk.Permanent(fmt.Errorf("edi: position is not the connector's state (%v); it was written by another connector type", err))
	}
	if st.Reserved == nil {
		st.Reserved = map[string]uint64{}
	}
	if st.Seen == nil {
		st.Seen = map[string][]seen{}
	}
	return st, nil
}

func (st *state) encode() string {
	b, _ := json.Marshal(st) // a struct of maps, slices and scalars always marshals
	return string(b)
}

func normControl(c string) string {
	c = strings.TrimLeft(strings.TrimSpace(c), "0")
	if c == "" {
		return "0"
	}
	return c
}

// find returns the index of partner's interchange control, or -1.
func (st *state) find(partner, control string) int {
	control = normControl(control)
	list := st.Seen[partner]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Control == control {
			return i
		}
	}
	return -1
}

// remember adds an interchange, dropping the oldest beyond window.
func (st *state) remember(partner string, s seen, window int) {
	s.Control = normControl(s.Control)
	list := append(st.Seen[partner], s)
	if len(list) > window {
		list = append([]seen(nil), list[len(list)-window:]...)
	}
	st.Seen[partner] = list
}

// maxControl is the largest ISA13.
const maxControl = 999999999

// alloc hands out n consecutive control numbers for partner and returns the first.
// The caller must get them committed (in the batch that uses them, or through
// reserve) before anything carrying them leaves. c.mu must be held.
func (c *Connector) alloc(partner string, n int) (uint64, error) {
	next := c.next[partner]
	if next == 0 {
		next = c.st.Reserved[partner] + 1
	}
	if next+uint64(n)-1 > maxControl {
		return 0, sdk.Permanent(fmt.Errorf("edi: control numbers for %s are exhausted (%d); start a new sender id", partner, maxControl))
	}
	c.next[partner] = next + uint64(n)
	return next, nil
}

// used raises the committed high-water mark to what was allocated. c.mu must be held.
func (c *Connector) used(partner string) {
	if n := c.next[partner]; n > 0 && n-1 > c.st.Reserved[partner] {
		c.st.Reserved[partner] = n - 1
	}
}

// commitReq asks the source loop to commit the state in the outbox, with events (the
// sink's edi.interchange events) or as an empty batch.
type commitReq struct {
	events []*eventv1.Event
	done   chan error
}

func eventIDs(evs []*eventv1.Event) []string {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.GetId()
	}
	return ids
}

// publish has the source loop commit events to the agent's outbox and returns when
// they are durable there.
func (c *Connector) publish(ctx context.Context, events ...*eventv1.Event) error {
	c.mu.Lock()
	running := c.st != nil && c.running
	c.mu.Unlock()
	if !running {
		return errNoSource
	}
	req := commitReq{events: events, done: make(chan error, 1)}
	select {
	case c.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		if err != nil {
			return fmt.Errorf("edi: publishing the interchange's state: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errNoSource: the sink cannot reserve control numbers without the source running.
var errNoSource = errors.New("edi: the connector's source is not running, so control numbers cannot be committed; do not set source: false on an edi connector")

// allocCommitted hands out n control numbers for the sink, committing a new reserved
// block through the source loop first when the block is used up.
func (c *Connector) allocCommitted(ctx context.Context, partner string, n int) (uint64, error) {
	for {
		c.mu.Lock()
		if c.st == nil || !c.running {
			c.mu.Unlock()
			return 0, errNoSource
		}
		if c.next[partner] == 0 {
			c.next[partner] = c.st.Reserved[partner] + 1
		}
		next := c.next[partner]
		if next+uint64(n)-1 <= c.st.Reserved[partner] {
			base, err := c.alloc(partner, n)
			c.mu.Unlock()
			return base, err
		}
		// Reserve a block above what is handed out and commit it.
		want := next + uint64(n) - 1 + reserveBlock
		if want > maxControl {
			want = maxControl
		}
		c.st.Reserved[partner] = want
		c.mu.Unlock()
		req := commitReq{done: make(chan error, 1)}
		select {
		case c.reqs <- req:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		select {
		case err := <-req.done:
			if err != nil {
				return 0, fmt.Errorf("edi: committing control numbers: %w", err)
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// fixedNumbers gives an interchange with g groups the numbers base (ISA13) and
// base+1.. (GS06), and ST02 0001.. within each group, so the same base always writes
// the same bytes.
type fixedNumbers struct {
	isa, gs uint64
	st      uint64
}

func newFixed(base uint64) *fixedNumbers { return &fixedNumbers{isa: base, gs: base} }

// Next implements x12.ControlNumbers.
func (f *fixedNumbers) Next(level x12.Level) (uint64, error) {
	switch level {
	case x12.LevelInterchange:
		return f.isa, nil
	case x12.LevelGroup:
		f.gs++
		f.st = 0
		return f.gs, nil
	default:
		f.st++
		return f.st, nil
	}
}

func controlString(n uint64) string { return strconv.FormatUint(n, 10) }
