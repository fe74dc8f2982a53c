package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/labels"
	"github.com/crossdock/crossdock/internal/protocol"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	storev1 "github.com/crossdock/crossdock/proto/gen/crossdock/store/v1"
)

// Agent upgrades from the CLI: `releases push|ls` and `agents upgrade [status]`
// (docs/fleet.md).

func newReleasesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "releases", Short: "Agent binaries for agent upgrades: push, ls"}
	cmd.AddCommand(newReleasesPushCmd(), newReleasesLsCmd())
	return cmd
}

func newReleasesPushCmd() *cobra.Command {
	var version, osName, arch string
	cmd := &cobra.Command{
		Use:   "push FILE --version VERSION",
		Short: "Upload an agent binary (admin)",
		Long: `Upload a crossdock binary for 'crossdock agents upgrade'. The node keeps it in its
data dir (releases/<sha256>) and records its version, platform, size and SHA-256
through raft; agents download it over their mTLS link and check the SHA-256.`,
		Example: "  crossdock releases push dist/crossdock-v1.4.0-linux-amd64 --version v1.4.0",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version == "" {
				return errors.New("--version is required: the version the binary reports (crossdock version)")
			}
			c, err := resolveConfig()
			if err != nil {
				return err
			}
			hc, addr, closeFn, err := c.HTTPClient()
			if err != nil {
				return err
			}
			defer closeFn()
			head := &adminv1.PushReleaseRequest{Version: version, Os: osName, Arch: arch}
			res, err := pushRelease(cmd.Context(), adminv1connect.NewFleetServiceClient(hc, addr), args[0], head)
			// A stream cannot be sent again by the client's leader redirect: the push is
			// made again to the leader a follower named.
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Meta().Get(protocol.LeaderHeader) != "" {
				res, err = pushRelease(cmd.Context(), adminv1connect.NewFleetServiceClient(hc, "https://"+ce.Meta().Get(protocol.LeaderHeader)), args[0], head)
			}
			if err != nil {
				return fmt.Errorf("push release: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res)
			}
			r := res.GetRelease()
			fmt.Fprintf(cmd.OutOrStdout(), "release %s %s/%s pushed: %d bytes, sha256 %s\n", r.GetVersion(), r.GetOs(), r.GetArch(), r.GetSize(), r.GetSha256())
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "the version the binary reports (required)")
	cmd.Flags().StringVar(&osName, "os", "linux", "the binary's operating system (GOOS)")
	cmd.Flags().StringVar(&arch, "arch", "amd64", "the binary's architecture (GOARCH)")
	return cmd
}

// pushRelease streams the file at path to c: head (its size filled in here) with the
// first bytes, then the rest in 1 MiB messages.
func pushRelease(ctx context.Context, c adminv1connect.FleetServiceClient, path string, head *adminv1.PushReleaseRequest) (*adminv1.PushReleaseResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	stream := c.PushRelease(ctx)
	msg := proto.Clone(head).(*adminv1.PushReleaseRequest)
	msg.Size = st.Size()
	buf := make([]byte, 1<<20)
	for {
		n, rerr := f.Read(buf)
		if n > 0 || msg != nil {
			if msg == nil {
				msg = &adminv1.PushReleaseRequest{}
			}
			msg.Data = buf[:n]
			if err := stream.Send(msg); err != nil {
				break // the answer says why
			}
			msg = nil
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read %s: %w", path, rerr)
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func newReleasesLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the agent binaries pushed",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fleetClient()
			if err != nil {
				return err
			}
			res, err := c.ListReleases(cmd.Context(), connect.NewRequest(&adminv1.ListReleasesRequest{}))
			if err != nil {
				return fmt.Errorf("list releases: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "VERSION", "PLATFORM", "SIZE", "SHA256", "PUSHED", "BY", "NODE")
			for _, r := range res.Msg.GetReleases() {
				fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%s\t%s\t%s\t%s\n", r.GetVersion(), r.GetOs(), r.GetArch(), r.GetSize(), r.GetSha256(), fmtTime(r.GetAt()), dash(r.GetActor()), r.GetNodeId())
			}
			return tw.Flush()
		},
	}
}

func newAgentsUpgradeCmd() *cobra.Command {
	var (
		to, selector, osName, arch string
		parallel                   uint32
		deadline                   time.Duration
		wait                       bool
	)
	cmd := &cobra.Command{
		Use:   "upgrade --to VERSION",
		Short: "Roll a pushed agent binary out to the agents (admin); 'upgrade status' shows progress",
		Long: `Upgrade agents to a release pushed with 'crossdock releases push'. At most
--max-parallel agents upgrade at once. Each downloads the binary over its mTLS link,
checks its SHA-256, swaps it in and starts it; an agent whose new build is not
connected within --deadline puts the previous build back by itself and reports it. The
first agent that fails stops the rollout. A rollout still running is cancelled.`,
		Example: "  crossdock agents upgrade --to v1.4.0 --selector site=east --max-parallel 2 --wait",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("--to VERSION is required (crossdock releases ls lists the versions pushed)")
			}
			if _, err := labels.Parse(selector); err != nil {
				return fmt.Errorf("--selector: %w", err)
			}
			c, err := fleetClient()
			if err != nil {
				return err
			}
			res, err := c.StartUpgrade(cmd.Context(), connect.NewRequest(&adminv1.StartUpgradeRequest{
				Version: to, Os: osName, Arch: arch, Selector: selector, MaxParallel: parallel, Deadline: durationpb.New(deadline),
			}))
			if err != nil {
				return fmt.Errorf("start upgrade: %w", err)
			}
			r := res.Msg.GetRollout()
			if !wait {
				if g.output != "table" {
					return printMessage(cmd.OutOrStdout(), res.Msg)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rollout %s started: %d agents to %s, %d at a time; crossdock agents upgrade status %s\n",
					r.GetId(), len(r.GetAgents()), r.GetVersion(), r.GetMaxParallel(), r.GetId())
				return nil
			}
			return waitRollout(cmd, c, r.GetId())
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the release's version (required)")
	f.StringVarP(&selector, "selector", "l", "", "only agents with these labels (site=east,erp=tryton); all when empty")
	f.Uint32Var(&parallel, "max-parallel", 1, "agents upgrading at once")
	f.DurationVar(&deadline, "deadline", 2*time.Minute, "how long an agent's new build has to connect before the agent rolls back (the control plane allows it this plus 30s from the agent's turn, download included)")
	f.StringVar(&osName, "os", "linux", "the release's operating system")
	f.StringVar(&arch, "arch", "amd64", "the release's architecture")
	f.BoolVar(&wait, "wait", false, "show progress until the rollout is done (exit status 1 when it failed)")
	cmd.AddCommand(newAgentsUpgradeStatusCmd())
	return cmd
}

func newAgentsUpgradeStatusCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "status [ROLLOUT]",
		Short: "Show a rollout (the newest by default), agent by agent",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fleetClient()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			if wait {
				return waitRollout(cmd, c, id)
			}
			res, err := c.GetUpgrade(cmd.Context(), connect.NewRequest(&adminv1.GetUpgradeRequest{Id: id}))
			if err != nil {
				return fmt.Errorf("upgrade status: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			return printRollout(cmd.OutOrStdout(), res.Msg.GetRollout())
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress until the rollout is done (exit status 1 when it failed)")
	return cmd
}

// waitRollout prints each change of a rollout until it is no longer running.
func waitRollout(cmd *cobra.Command, c interface {
	GetUpgrade(ctx context.Context, req *connect.Request[adminv1.GetUpgradeRequest]) (*connect.Response[adminv1.GetUpgradeResponse], error)
}, id string) error {
	w := cmd.OutOrStdout()
	seen := map[string]string{}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		res, err := c.GetUpgrade(cmd.Context(), connect.NewRequest(&adminv1.GetUpgradeRequest{Id: id}))
		switch {
		case connect.CodeOf(err) == connect.CodeUnavailable && id != "":
			// A leader change: the rollout goes on under the next leader.
		case err != nil:
			return fmt.Errorf("upgrade status: %w", err)
		}
		if err != nil {
			select {
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			case <-t.C:
			}
			continue
		}
		r := res.Msg.GetRollout()
		id = r.GetId()
		for _, a := range r.GetAgents() {
			if seen[a.GetAgentId()] != a.GetState() {
				seen[a.GetAgentId()] = a.GetState()
				fmt.Fprintf(w, "%s  %s %s%s\n", time.Now().Format(time.TimeOnly), a.GetAgentId(), a.GetState(), reasonSuffix(a.GetReason()))
			}
		}
		if r.GetState() != "running" {
			fmt.Fprintf(w, "rollout %s to %s: %s%s\n", r.GetId(), r.GetVersion(), r.GetState(), reasonSuffix(r.GetReason()))
			if r.GetState() != "done" {
				return &exitError{code: 1}
			}
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-t.C:
		}
	}
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func printRollout(w io.Writer, r *storev1.Rollout) error {
	fmt.Fprintf(w, "rollout:   %s to %s (%s/%s, sha256 %s)\n", r.GetId(), r.GetVersion(), r.GetOs(), r.GetArch(), r.GetSha256())
	fmt.Fprintf(w, "state:     %s%s\n", r.GetState(), reasonSuffix(r.GetReason()))
	fmt.Fprintf(w, "selector:  %s; %d at a time; deadline %s\n", dash(r.GetSelector()), r.GetMaxParallel(), time.Duration(r.GetDeadlineMs())*time.Millisecond)
	fmt.Fprintf(w, "started:   %s by %s\n", fmtTime(r.GetCreatedAt()), dash(r.GetActor()))
	tw := newTable(w, "AGENT", "STATE", "FROM", "STARTED", "FINISHED", "REASON")
	for _, a := range r.GetAgents() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.GetAgentId(), a.GetState(), dash(a.GetFromVersion()), fmtTime(a.GetStartedAt()), fmtTime(a.GetFinishedAt()), dash(a.GetReason()))
	}
	return tw.Flush()
}
