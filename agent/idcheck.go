package agent

import (
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/wire"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// recentIDs remembers, for the ids published lately that were not derived from their
// content (a caller's id or position, a connector's position), a fingerprint of their
// content and the outbox seq they got, so that publishing such an id again with other
// content fails at once instead of only when the control plane refuses it. It is
// bounded (the oldest forgotten first) and not durable: the control plane's check
// (conflicts in agent status and `agents describe`) is the one that always holds.
// It runs on every publish with positions, so it stores no event bytes and keys its
// map by a hash of the id (the ring holds the ids, to tell a hash collision).
type recentIDs struct {
	mu   sync.Mutex
	m    map[uint64]recentID
	ring []ringID // ids in the order they were added; ring[next] is the oldest
	next int
}

type ringID struct {
	id string
	h  uint64
}

type recentID struct {
	print uint64
	seq   uint64
	slot  int // in ring
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{m: make(map[uint64]recentID, n), ring: make([]ringID, n)}
}

// lookup returns what was recorded for id, whose hash is h.
func (c *recentIDs) lookup(id string, h uint64) (recentID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[h]
	if !ok || c.ring[r.slot].id != id {
		return recentID{}, false
	}
	return r, true
}

// addCall records the checked events of a publish call whose first event got seq
// first: prints[i] != 0 for each.
func (c *recentIDs) addCall(ids []string, hashes, prints []uint64, first uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range prints {
		if p == 0 {
			continue
		}
		h := hashes[i]
		slot := -1
		if r, ok := c.m[h]; ok && c.ring[r.slot].id == ids[i] {
			slot = r.slot
		} else {
			if old := c.ring[c.next]; old.id != "" {
				if r, ok := c.m[old.h]; ok && r.slot == c.next {
					delete(c.m, old.h)
				}
			}
			slot = c.next
			c.ring[slot] = ringID{ids[i], h}
			c.next = (c.next + 1) % len(c.ring)
		}
		c.m[h] = recentID{print: p, seq: first + uint64(i), slot: slot}
	}
}

// callIDs checks the ids of one publish call (see Agent.checkID). Its slices are
// reused from call to call (callIDsPool): allocating them per call was most of the
// check's cost.
type callIDs struct {
	prints, hashes []uint64 // per event; prints[i] == 0 for an event not checked
	recs           [][]byte
	seen           []uint64 // a bit per slot of the ids' hashes: repeats in the call are rare
	checked        []int    // events checked so far
}

var callIDsPool = sync.Pool{New: func() any { return new(callIDs) }}

// reset sizes c for a call of n events.
func (c *callIDs) reset(n int) {
	c.prints = slices.Grow(c.prints[:0], n)[:n]
	c.hashes = slices.Grow(c.hashes[:0], n)[:n]
	c.recs = slices.Grow(c.recs[:0], n)[:n]
	clear(c.prints)
	words := (16*n + 63) / 64
	c.seen = slices.Grow(c.seen[:0], words)[:words]
	clear(c.seen)
	c.checked = c.checked[:0]
}

// release returns c to the pool, without the records it points to.
func (c *callIDs) release() {
	clear(c.recs)
	if cap(c.prints) <= 1<<16 {
		callIDsPool.Put(c)
	}
}

// earlier returns an event of the call checked before with hash h, if any.
func (c *callIDs) earlier(h uint64) (int, bool) {
	bit := h % uint64(len(c.seen)*64)
	if c.seen[bit/64]&(1<<(bit%64)) == 0 {
		c.seen[bit/64] |= 1 << (bit % 64)
		return 0, false
	}
	for _, j := range c.checked {
		if c.hashes[j] == h {
			return j, true
		}
	}
	return 0, false
}

var printSeed = maphash.MakeSeed()

// contentPrint fingerprints what makes an encoded event the change it is (its type,
// business keys and payload; canonical.Differs compares the same): the id, time,
// source and trace are left out. Keys are combined in any order (AppendEvent writes
// them in map order).
func contentPrint(rec []byte) uint64 {
	var keys uint64
	var h maphash.Hash
	h.SetSeed(printSeed)
	for p := rec; len(p) > 0; {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			return maphash.Bytes(printSeed, rec)
		}
		m := protowire.ConsumeFieldValue(num, typ, p[n:])
		if m < 0 {
			return maphash.Bytes(printSeed, rec)
		}
		field := p[:n+m]
		p = p[n+m:]
		switch num {
		case wire.EventID, wire.EventOccurredAt, wire.EventSource, wire.EventTrace:
		case wire.EventKeys:
			keys += maphash.Bytes(printSeed, field)
		default:
			h.Write(field)
		}
	}
	return h.Sum64() ^ keys
}

// conflicts counts the events the control plane did not commit because their id was
// committed before with other content, per connector, with the newest of them.
type conflicts struct {
	mu          sync.Mutex
	total       uint64
	byConnector map[string]uint64
	recent      []*agentv1.Conflict
}

const maxRecentConflicts = 20

func (c *conflicts) add(cs []*uplinkv1.Conflict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byConnector == nil {
		c.byConnector = map[string]uint64{}
	}
	now := timestamppb.Now()
	for _, x := range cs {
		c.total++
		c.byConnector[x.GetConnector()]++
		c.recent = append(c.recent, &agentv1.Conflict{
			Id: x.GetId(), Connector: x.GetConnector(), Position: x.GetPosition(), Seq: x.GetSeq(),
			ExistingLedgerSeq: x.GetExistingLedgerSeq(), Differs: x.GetDiffers(), At: now,
		})
	}
	if n := len(c.recent); n > maxRecentConflicts {
		c.recent = c.recent[n-maxRecentConflicts:]
	}
}

func (c *conflicts) fill(st *agentv1.AgentStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Conflicts = c.total
	st.RecentConflicts = append([]*agentv1.Conflict(nil), c.recent...)
	for _, cs := range st.Connectors {
		cs.Conflicts = c.byConnector[cs.GetName()]
	}
}

// idConflictError is a publish refused because an id repeats with other content.
func idConflictError(i int, id, where, differs string) error {
	return fmt.Errorf("events[%d]: %w: id %s was published %s with other content (%s); the control plane commits an id once, "+
		"so this change would not be committed: give it a new source position or id", i, canonical.ErrIDConflict, id, where, differs)
}
