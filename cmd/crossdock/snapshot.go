package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/controlplane/ledger"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Back up and restore the control plane state"}
	cmd.AddCommand(&cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent backup of the cluster state to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			path := args[0]
			tmp, err := os.CreateTemp(filepath.Dir(path), ".snapshot-*")
			if err != nil {
				return fmt.Errorf("create %s: %w", path, err)
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			stream, err := c.SaveSnapshot(cmd.Context(), connect.NewRequest(&adminv1.SaveSnapshotRequest{}))
			if err != nil {
				return fmt.Errorf("save snapshot: %w", err)
			}
			var index, sent uint64
			for stream.Receive() {
				m := stream.Msg()
				if m.GetIndex() != 0 {
					index = m.GetIndex()
				}
				if _, err := tmp.Write(m.GetChunk()); err != nil {
					return fmt.Errorf("write %s: %w", path, err)
				}
				sent = m.GetBytesSent()
				cmd.PrintErrf("\rsaving snapshot: %s", humanBytes(sent))
			}
			cmd.PrintErrln()
			if err := stream.Err(); err != nil {
				return fmt.Errorf("save snapshot: %w", err)
			}
			if err := tmp.Sync(); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			cmd.PrintErrf("saved snapshot at raft index %d to %s (%s)\n", index, path, humanBytes(sent))
			return nil
		},
	})
	var force bool
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster's state with a backup (dangerous: state after the backup is lost)",
		Long: `Replace the whole cluster's state with a backup (dangerous: state after the backup is lost).
A backup of another cluster (its cluster id differs from this cluster's) is refused:
it would replace this cluster's CA, admin tokens and node list. --force installs it
anyway, for a deliberate migration (docs/operations.md, Backup and restore).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClient()
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open backup: %w", err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("open backup: %w", err)
			}
			stream := c.RestoreSnapshot(cmd.Context())
			buf := make([]byte, 256<<10)
			var sent int64
			for {
				n, rerr := f.Read(buf)
				if n > 0 {
					if err := stream.Send(&adminv1.RestoreSnapshotRequest{Chunk: buf[:n], Force: force}); err != nil {
						_, cerr := stream.CloseAndReceive()
						return fmt.Errorf("upload backup: %w", errors.Join(err, cerr))
					}
					sent += int64(n)
					cmd.PrintErrf("\rrestoring snapshot: %s of %s uploaded", humanBytes(uint64(sent)), humanBytes(uint64(st.Size())))
				}
				if rerr == io.EOF {
					break
				}
				if rerr != nil {
					return fmt.Errorf("read backup: %w", rerr)
				}
			}
			cmd.PrintErrln()
			res, err := stream.CloseAndReceive()
			if err != nil {
				return fmt.Errorf("restore snapshot: %w", err)
			}
			cmd.PrintErrf("restored: cluster state installed at raft index %d; ledger at seq %d; cluster id %s\n", res.Msg.GetIndex(), res.Msg.GetEvents(), res.Msg.GetClusterId())
			return nil
		},
	}
	restore.Flags().BoolVar(&force, "force", false, "install a backup of another cluster: its CA and admin tokens replace this cluster's")
	cmd.AddCommand(restore)
	cmd.AddCommand(newSnapshotInspectCmd())
	return cmd
}

// snapshotInspection is `snapshot inspect -o json`.
type snapshotInspection struct {
	File      string                   `json:"file"`
	FileBytes int64                    `json:"fileBytes"`
	Index     uint64                   `json:"index"`
	ClusterID string                   `json:"clusterId,omitempty"`
	Records   uint64                   `json:"records"`
	Bytes     uint64                   `json:"bytes"`
	Sections  []ledger.SnapshotSection `json:"sections"`
}

func newSnapshotInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Verify a snapshot file and show what it holds, by key prefix",
		Long: `Verify a snapshot file (a backup from "snapshot save", or a raft snapshot's data file)
and show, per key prefix, how many records it holds and their bytes before compression.
It reads only the file: no server is needed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open snapshot: %w", err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("open snapshot: %w", err)
			}
			info, sections, err := ledger.InspectSnapshotSections(f)
			if err != nil {
				return fmt.Errorf("inspect %s: %w", args[0], err)
			}
			out := snapshotInspection{File: args[0], FileBytes: st.Size(), Index: info.Index, ClusterID: info.ClusterID, Sections: sections}
			for _, s := range sections {
				out.Records += s.Records
				out.Bytes += s.Bytes
			}
			w := cmd.OutOrStdout()
			switch g.output {
			case "json", "yaml":
				b, err := json.MarshalIndent(out, "", "  ")
				if err != nil {
					return fmt.Errorf("encode output: %w", err)
				}
				if g.output == "yaml" {
					if b, err = yaml.JSONToYAML(b); err != nil {
						return fmt.Errorf("encode output: %w", err)
					}
					_, err = w.Write(b)
					return err
				}
				_, err = fmt.Fprintln(w, string(b))
				return err
			case "table":
			default:
				return fmt.Errorf("-o %s: want table, json or yaml", g.output)
			}
			cluster := out.ClusterID
			if cluster == "" {
				cluster = "none (taken before bootstrap)"
			}
			fmt.Fprintf(w, "%s: raft index %d, cluster %s, %s on disk, %d records, %s before compression\n",
				out.File, out.Index, cluster, humanBytes(uint64(out.FileBytes)), out.Records, humanBytes(out.Bytes))
			tw := newTable(w, "PREFIX", "RECORDS", "BYTES", "SHARE", "HOLDS")
			for _, s := range sections {
				share := 0.0
				if out.Bytes > 0 {
					share = 100 * float64(s.Bytes) / float64(out.Bytes)
				}
				name := s.Name
				if name == "" {
					name = "-"
				}
				fmt.Fprintf(tw, "%q\t%d\t%s\t%.1f%%\t%s\n", s.Prefix, s.Records, humanBytes(s.Bytes), share, name)
			}
			return tw.Flush()
		},
	}
}

func humanBytes(n uint64) string {
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
