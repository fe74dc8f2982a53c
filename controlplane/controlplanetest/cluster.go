package controlplanetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/store"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// Cluster is n real control plane nodes in this process, talking raft over mutual TLS
// on loopback through a fault injector.
type Cluster struct {
	t      testing.TB
	Nodes  []*Server
	Faults *Faults
	// adminConfig is the first node's admin config: only a bootstrapping node writes
	// one, and every node's Admin uses it, aimed at that node.
	adminConfig string
}

// TestCluster starts n nodes: the first bootstraps, the others join with server tokens
// and are promoted to voters. cb may adjust each node's config.
func TestCluster(t testing.TB, n int, cb func(i int, c *controlplane.Config)) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Faults: NewFaults()}
	tune := func(i int) func(*controlplane.Config) {
		return func(cfg *controlplane.Config) {
			cfg.NodeID = fmt.Sprintf("node-%d", i+1)
			cfg.TuneStore = func(sc *store.Config) {
				FastRaft(sc)
				// Several nodes share two cores (and the race detector): leave room so
				// a busy follower does not start elections for nothing.
				sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
				sc.StreamLayer = c.Faults.Wrap(sc.StreamLayer)
			}
			if cb != nil {
				cb(i, cfg)
			}
		}
	}
	first := TestServer(t, tune(0))
	c.Nodes = append(c.Nodes, first)
	c.adminConfig = first.AdminConfigPath()
	for i := 1; i < n; i++ {
		res, err := first.Admin.CreateToken(context.Background(), connect.NewRequest(&adminv1.CreateTokenRequest{
			Kind: adminv1.TokenKind_TOKEN_KIND_SERVER, Ttl: durationpb.New(time.Minute),
		}))
		if err != nil {
			t.Fatalf("server token: %v", err)
		}
		join := func(cfg *controlplane.Config) {
			tune(i)(cfg)
			cfg.Bootstrap = false
			cfg.Join = []string{first.Addr()}
			cfg.JoinToken = res.Msg.GetToken()
		}
		s := startServer(t, join, false)
		s.Admin = adminClientAt(t, c.adminConfig, s.Addr())
		c.Nodes = append(c.Nodes, s)
	}
	c.WaitVoters(n)
	return c
}

// WaitVoters waits until the leader's configuration has n voters and every running
// node knows the leader.
func (c *Cluster) WaitVoters(n int) {
	c.t.Helper()
	WaitFor(c.t, 60*time.Second, fmt.Sprintf("%d voters", n), func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		cf := l.Store().Raft().GetConfiguration()
		if cf.Error() != nil {
			return false
		}
		voters := 0
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage == 0 { // raft.Voter
				voters++
			}
		}
		return voters == n
	})
}

// Leader returns the running node that is leader, or nil.
func (c *Cluster) Leader() *Server {
	for _, s := range c.Nodes {
		if s.Running() && s.Store().IsLeader() {
			return s
		}
	}
	return nil
}

// WaitLeader waits for a leader among the running nodes, other than not (may be nil).
func (c *Cluster) WaitLeader(not *Server) *Server {
	c.t.Helper()
	var l *Server
	WaitFor(c.t, 30*time.Second, "a leader", func() bool {
		l = c.Leader()
		return l != nil && l != not
	})
	return l
}

// Addrs returns every node's API address.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr()
	}
	return out
}

// RaftAddrs returns the raft addresses of the given nodes.
func RaftAddrs(nodes ...*Server) []string {
	out := make([]string, len(nodes))
	for i, s := range nodes {
		out[i] = s.Store().RaftAddr()
	}
	return out
}

// Restart starts node i again from its data dir (after Stop).
func (c *Cluster) Restart(i int) *Server {
	c.t.Helper()
	old := c.Nodes[i]
	cfg := old.Config
	s := startServer(c.t, func(nc *controlplane.Config) { *nc = cfg }, false)
	s.Admin = adminClientAt(c.t, c.adminConfig, s.Addr())
	c.Nodes[i] = s
	return s
}

// WaitConverged waits until every running node has applied the same index and holds
// the same ledger hash, and returns that hash.
func (c *Cluster) WaitConverged() string {
	c.t.Helper()
	var hash string
	WaitFor(c.t, 60*time.Second, "nodes to converge", func() bool {
		hash = ""
		var idx uint64
		for _, s := range c.Nodes {
			if !s.Running() {
				continue
			}
			h, err := s.Store().Ledger().Hash()
			if err != nil {
				return false
			}
			a := s.Store().Ledger().AppliedIndex()
			if hash == "" {
				hash, idx = h, a
			} else if h != hash || a != idx {
				return false
			}
		}
		return hash != ""
	})
	return hash
}
