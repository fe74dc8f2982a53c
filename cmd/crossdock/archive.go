package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/controlplane/archive"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// parseArchiveTime reads --from and --to: an RFC 3339 time, a UTC date (2026-12-04,
// its midnight), or a duration ago (36h).
func parseArchiveTime(flag, s string, now time.Time) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return timestamppb.New(t), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return timestamppb.New(t), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return timestamppb.New(now.Add(-d)), nil
	}
	return nil, fmt.Errorf("%s %q: want an RFC 3339 time (2026-12-04T08:00:00Z), a UTC date (2026-12-04) or a duration ago (36h)", flag, s)
}

func newArchiveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "The archive of events pruned from the ledger: list, verify, replay to a destination",
		Long: "Every control plane node writes the events it prunes from its ledger to its own archive\n" +
			"(server --archive-dir, default <data-dir>/archive): gzip files per UTC day and event type,\n" +
			"with a manifest per day holding each file's count, seq and time range, size and SHA-256.\n" +
			"ls and verify answer for the node the CLI talks to; replay runs on the leader, from its archive.",
	}
	cmd.AddCommand(newArchiveLsCmd(), newArchiveVerifyCmd(), newArchiveReplayCmd(), newArchiveCatCmd())
	return cmd
}

// archiveRange holds the flags that select archived events.
type archiveRange struct {
	from, to string
	types    []string
}

func (r *archiveRange) add(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&r.from, "from", "", what+" committed at or after: an RFC 3339 time, a UTC date (2026-12-04) or a duration ago (36h)")
	cmd.Flags().StringVar(&r.to, "to", "", what+" committed before this time (same forms as --from)")
	cmd.Flags().StringArrayVar(&r.types, "type", nil, "only this event type (repeatable)")
}

func (r *archiveRange) parse(now time.Time) (from, to *timestamppb.Timestamp, err error) {
	if from, err = parseArchiveTime("--from", r.from, now); err != nil {
		return nil, nil, err
	}
	if to, err = parseArchiveTime("--to", r.to, now); err != nil {
		return nil, nil, err
	}
	return from, to, nil
}

func listArchive(cmd *cobra.Command, r *archiveRange, verify bool) (*adminv1.ListArchiveResponse, error) {
	from, to, err := r.parse(time.Now())
	if err != nil {
		return nil, err
	}
	c, err := adminClient()
	if err != nil {
		return nil, err
	}
	res, err := c.ListArchive(cmd.Context(), connect.NewRequest(&adminv1.ListArchiveRequest{From: from, To: to, Types: r.types, Verify: verify}))
	if err != nil {
		return nil, fmt.Errorf("list archive: %w", err)
	}
	return res.Msg, nil
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

type archiveTotals struct {
	files, damaged int
	events         uint64
	bytes          int64
}

func (t *archiveTotals) add(f *adminv1.ArchiveFile) {
	t.files++
	t.events += f.GetEvents()
	t.bytes += f.GetBytes()
	if f.GetDamage() != "" {
		t.damaged++
	}
}

func newArchiveLsCmd() *cobra.Command {
	var r archiveRange
	var days bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the archive's files (or days) with event counts and sizes; damaged files are flagged",
		Long: "ls reads the manifests of the node the CLI talks to and checks that each file is there with\n" +
			"its size; `crossdock archive verify` reads every file and checks its SHA-256 and records.",
		Example: "  crossdock archive ls\n  crossdock archive ls --days\n  crossdock archive ls --from 2026-12-01 --to 2026-12-04 --type inventory.level",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := listArchive(cmd, &r, false)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res)
			}
			var all archiveTotals
			if days {
				tw := newTable(cmd.OutOrStdout(), "DAY", "FILES", "EVENTS", "SIZE", "DAMAGED")
				var order []string
				per := map[string]*archiveTotals{}
				for _, f := range res.GetFiles() {
					if per[f.GetDay()] == nil {
						per[f.GetDay()] = &archiveTotals{}
						order = append(order, f.GetDay())
					}
					per[f.GetDay()].add(f)
					all.add(f)
				}
				for _, d := range order {
					t := per[d]
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\n", d, t.files, t.events, fmtBytes(t.bytes), t.damaged)
				}
				tw.Flush()
			} else {
				tw := newTable(cmd.OutOrStdout(), "FILE", "EVENTS", "SEQS", "COMMITTED", "SIZE", "STATUS")
				for _, f := range res.GetFiles() {
					all.add(f)
					status := "ok"
					if f.GetDamage() != "" {
						status = "DAMAGED: " + f.GetDamage()
					}
					if f.GetEvents() == 0 { // a damaged manifest
						fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\n", f.GetName(), status)
						continue
					}
					fmt.Fprintf(tw, "%s\t%d\t%d..%d\t%s..%s\t%s\t%s\n", f.GetName(), f.GetEvents(), f.GetFirstSeq(), f.GetLastSeq(),
						f.GetFirstTime().AsTime().UTC().Format("15:04:05"), f.GetLastTime().AsTime().UTC().Format("15:04:05"), fmtBytes(f.GetBytes()), status)
				}
				tw.Flush()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d files, %d events, %s in the archive of node %s", all.files, all.events, fmtBytes(all.bytes), res.GetNode())
			if all.damaged > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "; %d DAMAGED (crossdock archive verify says why)", all.damaged)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	r.add(cmd, "files with events")
	cmd.Flags().BoolVar(&days, "days", false, "one line per day instead of per file")
	return cmd
}

func newArchiveVerifyCmd() *cobra.Command {
	var r archiveRange
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read every archive file and check its SHA-256 and records against the manifest",
		Long: "verify reads every file of the node the CLI talks to, checks its SHA-256 against the day's\n" +
			"manifest and decodes every record. It exits with status 1 when a file is damaged; restore\n" +
			"that file (and its manifest entry) from another node's archive.",
		Example: "  crossdock archive verify\n  crossdock archive verify --from 2026-12-01",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := listArchive(cmd, &r, true)
			if err != nil {
				return err
			}
			if g.output != "table" {
				if err := printMessage(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			}
			var all archiveTotals
			for _, f := range res.GetFiles() {
				all.add(f)
				if f.GetDamage() != "" && g.output == "table" {
					fmt.Fprintf(cmd.OutOrStdout(), "DAMAGED %s: %s\n", f.GetName(), f.GetDamage())
				}
			}
			if all.damaged > 0 {
				return fmt.Errorf("%d of %d archive files on node %s are damaged", all.damaged, all.files, res.GetNode())
			}
			if g.output == "table" {
				fmt.Fprintf(cmd.OutOrStdout(), "verified %d files, %d events, %s on node %s: every checksum and record matches its manifest\n",
					all.files, all.events, fmtBytes(all.bytes), res.GetNode())
			}
			return nil
		},
	}
	r.add(cmd, "files with events")
	return cmd
}

func newArchiveReplayCmd() *cobra.Command {
	var r archiveRange
	var route, dest string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Send archived events a route matches to its destination again, with progress",
		Long: "replay sends the archived events committed in [--from, --to) that the route matches to its\n" +
			"destination again, through the destination's policy, from the leader's archive. Messages\n" +
			"carry their original idempotency key (webhook-id: the event id). Every file is checked\n" +
			"first: a damaged one stops the replay before anything is sent. The replay is not recorded\n" +
			"in the ledger: Ctrl-C or a leader change stops it; running it again sends the same ids.",
		Example: "  crossdock archive replay --route shop-stock --from 2026-12-01 --to 2026-12-02\n" +
			"  crossdock archive replay --route shop-orders --from 720h --type order",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if route == "" {
				return errors.New("--route: required")
			}
			if r.from == "" {
				return errors.New("--from: required: the commit time to start at (an RFC 3339 time, a UTC date such as 2026-12-01, or a duration ago such as 720h)")
			}
			from, to, err := r.parse(time.Now())
			if err != nil {
				return err
			}
			c, err := adminClient()
			if err != nil {
				return err
			}
			stream, err := c.ReplayArchive(cmd.Context(), connect.NewRequest(&adminv1.ReplayArchiveRequest{
				Route: route, Destination: dest, From: from, To: to, Types: r.types,
			}))
			if err != nil {
				return fmt.Errorf("archive replay: %w", err)
			}
			defer stream.Close()
			var last *adminv1.ReplayArchiveResponse
			for stream.Receive() {
				p := stream.Msg()
				last = p
				if g.output != "table" {
					if err := printLine(cmd.OutOrStdout(), p); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "archive replay to %s (node %s): %d/%d events read, %d sent, %d dead-lettered, %d coalesced\n",
					p.GetDestination(), p.GetNode(), p.GetScanned(), p.GetTotal(), p.GetSent(), p.GetDeadLettered(), p.GetCoalesced())
			}
			if interrupted(cmd) {
				if last != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: the archive replay stopped after %d of %d events (%d sent); messages already queued are still sent\n",
						last.GetScanned(), last.GetTotal(), last.GetSent())
				}
				return &exitError{code: exitInterrupted}
			}
			if err := stream.Err(); err != nil {
				return fmt.Errorf("archive replay: %w", err)
			}
			if last == nil || !last.GetDone() {
				return errors.New("archive replay: the stream ended before the replay finished; run crossdock archive replay again (the same ids are sent)")
			}
			if g.output == "table" {
				fmt.Fprintf(cmd.OutOrStdout(), "archive replay to %s done: %d events from %d files, %d sent, %d dead-lettered, %d coalesced\n",
					last.GetDestination(), last.GetTotal(), last.GetFiles(), last.GetSent(), last.GetDeadLettered(), last.GetCoalesced())
			}
			return nil
		},
	}
	r.add(cmd, "events")
	cmd.Flags().StringVar(&route, "route", "", "the route whose archived events to send again")
	cmd.Flags().StringVar(&dest, "destination", "", "the destination, when the route feeds several")
	return cmd
}

func newArchiveCatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cat FILE...",
		Short: "Print the events of archive files on this machine as JSON lines",
		Long: "cat decodes archive files (.pb.gz) from the local disk, one event per line as JSON, for\n" +
			"grep and jq. It does not compare checksums with the manifest: crossdock archive verify does.",
		Example: "  crossdock archive cat crossdock-server/archive/2026/12/04/order/*.pb.gz | grep SO-1001",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			for _, name := range args {
				data, err := os.ReadFile(name)
				if err != nil {
					return err
				}
				err = archive.DecodeFile(data, func(ev *eventv1.CommittedEvent) error {
					b, err := protojson.Marshal(ev)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(w, strings.TrimSpace(string(b)))
					return err
				})
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			return nil
		},
	}
}
