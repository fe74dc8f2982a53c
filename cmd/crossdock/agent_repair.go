package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/agent/outbox"
)

func newAgentRepairCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Salvage a damaged outbox: keep every intact event, report what was lost",
		Long: `Repair checks the agent's outbox (<data-dir>/outbox) and, if it is damaged, moves it
aside to <data-dir>/outbox.damaged-<UTC time> (kept, never deleted), copies every event
that reads back whole into a new outbox with the same outbox seqs, keeps the source
positions and the acknowledged mark, and prints what was lost (seq ranges, events,
bytes). The new outbox continues above every seq the old one gave. An intact outbox is
left alone.

Stop the agent first: repair refuses an outbox that a running agent holds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := outbox.Repair(outbox.Options{Dir: filepath.Join(dataDir, "outbox")})
			if err != nil {
				return err
			}
			printRepair(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("CROSSDOCK_AGENT_DATA_DIR", "crossdock-agent"), "the agent's data directory (identity, outbox)")
	return cmd
}

func printRepair(w io.Writer, rep *outbox.RepairReport) {
	if rep.Damage == nil {
		fmt.Fprintf(w, "outbox %s is intact; nothing to repair\n", rep.Dir)
		return
	}
	fmt.Fprintf(w, "damage found in %s:\n", rep.Dir)
	for _, p := range rep.Damage.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	fmt.Fprintf(w, "damaged outbox kept in: %s\n", rep.DamagedDir)
	if rep.FromValueLog {
		fmt.Fprintln(w, "read from:   the value-log files (the index could not be read); events already acknowledged")
		fmt.Fprintln(w, "             but not yet reclaimed are kept too: the control plane drops them as duplicates")
	}
	acked := fmt.Sprintf("seq %d", rep.AckedSeq)
	if !rep.AckedKnown {
		acked = "unknown (lost with the index)"
	}
	fmt.Fprintf(w, "acknowledged: %s\n", acked)
	fmt.Fprintf(w, "salvaged:    %d events, %d bytes, seqs %s\n", rep.SalvagedEvents, rep.SalvagedBytes, ranges(rep.Salvaged))
	lost := fmt.Sprintf("%d events, %d bytes, seqs %s", rep.LostEvents, rep.LostBytes, ranges(rep.Lost))
	switch {
	case rep.LostEvents == 0:
		lost = "none known"
	case rep.FromValueLog:
		lost = fmt.Sprintf("%d events, seqs %s (missing from the value log: lost, or acknowledged earlier)", rep.LostEvents, ranges(rep.Lost))
	}
	fmt.Fprintf(w, "lost:        %s\n", lost)
	fmt.Fprintf(w, "positions:   kept %s", list(rep.Positions))
	if len(rep.PositionsLost) > 0 {
		fmt.Fprintf(w, "; LOST %s (those connectors start over from their configured start)", list(rep.PositionsLost))
	}
	if rep.FromValueLog {
		fmt.Fprint(w, "; positions shorter than 32 bytes were only in the index and are lost")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "next seq:    %d\n", rep.NextSeq)
	fmt.Fprintln(w, "the agent can start again.")
}

func ranges(rs []outbox.SeqRange) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
