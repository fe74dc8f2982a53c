package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect the raft cluster"}
	cmd.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "List raft peers with role and applied index, and store their addresses in the CLI config",
		Long: `List the raft peers as the leader sees them: a node the leader cannot reach is
shown as "unreachable", not "follower". The applied index is that of the node that
answered.

When the CLI config file is in use (no --addr or CROSSDOCK_ADDR) and belongs to this
cluster, the API addresses of all peers are written to it, so later commands try each
node in turn when one is down.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := resolveConfig()
			if err != nil {
				return err
			}
			c, closeFn, err := cfg.AdminClient()
			if err != nil {
				return err
			}
			defer closeFn()
			res, err := c.GetClusterStatus(cmd.Context(), connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
			if err != nil {
				return fmt.Errorf("cluster status: %w", err)
			}
			st := leaderView(cmd, cfg, res.Msg)
			if cfg.ClusterID != "" && st.GetClusterId() != "" && cfg.ClusterID != st.GetClusterId() {
				cmd.PrintErrf("warning: the CLI config %s was written for cluster %s, but the nodes it reaches are cluster %s\n", cfg.Path, cfg.ClusterID, st.GetClusterId())
			} else {
				refreshNodes(cmd, cfg, st)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), st)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "API", "RAFT", "ROLE", "APPLIED INDEX", "LAST CONTACT", "DISK FREE")
			for _, p := range st.GetPeers() {
				applied := "-"
				if p.GetAppliedIndex() != 0 {
					applied = fmt.Sprint(p.GetAppliedIndex())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetId(), p.GetApiAddress(), p.GetAddress(), p.GetRole(), applied, fmtTime(p.GetLastContact()), fmtDisk(p))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if r := st.GetWritesRefused(); r != "" {
				cmd.PrintErrf("new events refused: %s\n", r)
			}
			if o := st.GetOlderBuilds(); len(o) > 0 {
				cmd.PrintErrf("not yet reported this build to the leader (nodes report every 5s; until all have, prunes compact every key they remove): %s\n", strings.Join(o, ", "))
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "remove ID",
		Short: "Remove a node from the raft cluster (e.g. a dead node being replaced)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			if _, err := c.RemovePeer(cmd.Context(), connect.NewRequest(&adminv1.RemovePeerRequest{Id: args[0]})); err != nil {
				return fmt.Errorf("remove peer: %w", err)
			}
			cmd.PrintErrf("removed %s from the cluster\n", args[0])
			return nil
		},
	})
	return cmd
}

// leaderView returns the leader's answer to GetClusterStatus, asked directly (the call
// is answered by the node that receives it): only the leader knows which followers
// answer it. When the leader cannot be asked, st (the view of the node that answered)
// is returned with a warning.
func leaderView(cmd *cobra.Command, cfg *cliconfig.Config, st *adminv1.GetClusterStatusResponse) *adminv1.GetClusterStatusResponse {
	var leaderAPI string
	for _, p := range st.GetPeers() {
		if p.GetId() == st.GetLeaderId() {
			leaderAPI = p.GetApiAddress()
		}
	}
	if leaderAPI == "" {
		if st.GetLeaderId() == "" {
			cmd.PrintErrln("warning: the cluster has no leader right now; roles are as the node that answered last saw them")
		}
		return st
	}
	lc := *cfg
	lc.Addr, lc.Addrs = leaderAPI, nil
	client, closeFn, err := lc.AdminClient()
	if err != nil {
		return st
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	res, err := client.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil || res.Msg.GetLeaderId() != st.GetLeaderId() {
		cmd.PrintErrf("warning: could not ask the leader %s (%s) for its view; roles of other nodes are unverified: %v\n", st.GetLeaderId(), leaderAPI, err)
		return st
	}
	// The applied index of the node that answered first is kept: the leader reports
	// only its own.
	for _, p := range res.Msg.GetPeers() {
		for _, q := range st.GetPeers() {
			if p.GetId() == q.GetId() && p.GetAppliedIndex() == 0 {
				p.AppliedIndex = q.GetAppliedIndex()
			}
		}
	}
	return res.Msg
}

// refreshNodes writes the peers' API addresses to the CLI config file the command
// used, when it came from that file alone (no --addr or CROSSDOCK_ADDR) and differs.
func refreshNodes(cmd *cobra.Command, cfg *cliconfig.Config, st *adminv1.GetClusterStatusResponse) {
	if cfg.Path == "" || g.addr != "" || os.Getenv("CROSSDOCK_ADDR") != "" {
		return
	}
	var nodes []string
	for _, p := range st.GetPeers() {
		if a := p.GetApiAddress(); a != "" && !slices.Contains(nodes, a) {
			nodes = append(nodes, a)
		}
	}
	if len(nodes) == 0 {
		return
	}
	fc, err := cliconfig.Load(cfg.Path)
	if err != nil {
		return
	}
	if slices.Equal(fc.Servers(), orderFirst(nodes, fc.Addr)) {
		return
	}
	nodes = orderFirst(nodes, fc.Addr)
	fc.Addr, fc.Addrs = nodes[0], nodes[1:]
	if fc.ClusterID == "" {
		fc.ClusterID = st.GetClusterId()
	}
	if err := cliconfig.Write(cfg.Path, fc); err != nil {
		cmd.PrintErrf("warning: could not store the cluster's nodes in %s: %v\n", cfg.Path, err)
		return
	}
	cmd.PrintErrf("stored the cluster's nodes in %s: %s\n", cfg.Path, strings.Join(nodes, ", "))
}

// orderFirst returns nodes with first moved to the front when it is one of them.
func orderFirst(nodes []string, first string) []string {
	i := slices.Index(nodes, first)
	if i < 0 {
		return nodes
	}
	out := append([]string{first}, nodes[:i]...)
	return append(out, nodes[i+1:]...)
}

// fmtDisk shows a node's free disk and the minimum it keeps, "-" when not known.
func fmtDisk(p *adminv1.Peer) string {
	free := p.GetDiskFreeBytes()
	if free == 0 && p.GetDiskMinFreeBytes() == 0 {
		return "-"
	}
	s := fmt.Sprintf("%d MiB", free>>20)
	switch min := p.GetDiskMinFreeBytes(); {
	case min == 0:
		s += " (guard off)"
	case free < min:
		s += fmt.Sprintf(" LOW (keeps %d MiB)", min>>20)
	}
	return s
}
