package agent

import (
	"fmt"
	"sync"

	"github.com/crossdock/crossdock/internal/canonical"
	agentv1 "github.com/crossdock/crossdock/proto/gen/crossdock/agent/v1"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// recentIDs remembers the encoded events of the ids published lately that were not
// derived from their content (a caller's id or position, a connector's position), so
// that publishing such an id again with other content fails at once, naming what
// differs, instead of only when the control plane refuses it. It is bounded (oldest
// forgotten first) and not durable: the control plane's check (conflicts in agent
// status and `agents describe`) is the one that always holds.
type recentIDs struct {
	mu    sync.Mutex
	m     map[string][]byte
	order []string
	bytes int
	max   int
}

func newRecentIDs(maxBytes int) *recentIDs {
	return &recentIDs{m: map[string][]byte{}, max: maxBytes}
}

// conflict returns what differs when id was published with other content than rec.
func (c *recentIDs) conflict(id string, rec []byte) string {
	c.mu.Lock()
	prev, ok := c.m[id]
	c.mu.Unlock()
	if !ok {
		return ""
	}
	_, d := canonical.SameContent(prev, rec)
	return d
}

func (c *recentIDs) add(id string, rec []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.m[id]; ok {
		c.bytes -= len(prev)
	} else {
		c.order = append(c.order, id)
	}
	c.m[id] = append([]byte(nil), rec...)
	c.bytes += len(rec)
	for c.bytes > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		if b, ok := c.m[old]; ok {
			c.bytes -= len(b)
			delete(c.m, old)
		}
	}
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
