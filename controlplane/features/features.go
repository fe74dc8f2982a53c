// Package features says which stored-state features each control plane node's build
// applies. A stored-state feature is one a command can carry that changes what every
// node writes when it applies the command: a node of a build before it ignores the
// field and writes something else, and the nodes' stored state stops being identical.
// The leader therefore uses such a feature in a command only once every node in the
// raft configuration has told it, in its own term, that its build applies the feature.
// Nodes tell the leader with their disk reports (ClusterService.ReportDisk), every few
// seconds.
//
// This guards an upgrade done one node at a time. It does not make a downgrade safe: a
// node that goes back to an older build applies the commands already in the log with
// the older build's rules.
package features

import (
	"slices"
	"sync"
)

// CompactListed: PruneLedger.compact_listed and compact_seqs, a prune that lists the
// events it writes to the compacted base (controlplane/retention). A build before it
// writes the newest pruned event of every key instead.
const CompactListed = "prune.compact_listed"

// Build returns the stored-state features this build applies.
func Build() []string { return []string{CompactListed} }

// Reports keeps, on the leader, what each node last reported and in which raft term.
// The zero value is ready to use; it is safe for concurrent use.
type Reports struct {
	mu    sync.Mutex
	nodes map[string]report
}

type report struct {
	term     uint64
	features []string
}

// Record keeps node's report, received in raft term term; it replaces the node's last.
func (r *Reports) Record(node string, features []string, term uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes == nil {
		r.nodes = map[string]report{}
	}
	r.nodes[node] = report{term: term, features: slices.Clone(features)}
}

// Missing returns, sorted, the nodes among servers other than self that have not
// reported every one of want in raft term term: no report in that term (a report from
// an earlier term may be another leadership's, and stale), or a report without one of
// them. The caller (self) runs this build and applies them.
func (r *Reports) Missing(self string, servers []string, term uint64, want ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range servers {
		if id == self {
			continue
		}
		rep, ok := r.nodes[id]
		if !ok || rep.term != term || slices.ContainsFunc(want, func(f string) bool { return !slices.Contains(rep.features, f) }) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
