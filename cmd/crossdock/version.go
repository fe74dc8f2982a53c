package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/cliconfig"
)

// Set by `make release` with -ldflags "-X main.version=... -X main.commit=... -X
// main.date=...". Without them, commit and date come from the VCS stamp Go puts in
// the binary (runtime/debug.ReadBuildInfo) when it was built in a git checkout.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// The agent reports the binary's version (agents ls, upgrades), demo agents included.
func init() { agent.Version = version }

// buildInfo is what `crossdock version` prints.
type buildInfo struct {
	Version      string `json:"version"`
	Commit       string `json:"commit"`
	Date         string `json:"date"`
	Modified     bool   `json:"modified,omitempty"`
	Go           string `json:"go"`
	Platform     string `json:"platform"`
	LedgerLayout int    `json:"ledger_layout"`
	OutboxLayout int    `json:"outbox_layout"`
	// CLIConfig is the CLI config file commands use, and whether it exists.
	CLIConfig       string `json:"cli_config"`
	CLIConfigExists bool   `json:"cli_config_exists"`
}

func currentBuild() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	b := buildFrom(bi, version, commit, date)
	b.CLIConfig, b.CLIConfigExists = configPath()
	return b
}

// buildFrom fills what -ldflags did not set (ver "dev", com and dat "") from the VCS
// stamp in bi (nil when the binary has none): Go stamps the commit and its time when
// it builds in a git checkout (not a git worktree, nor with -buildvcs=false).
func buildFrom(bi *debug.BuildInfo, ver, com, dat string) buildInfo {
	b := buildInfo{
		Version: ver, Commit: com, Date: dat, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, LedgerLayout: ledger.Layout, OutboxLayout: outbox.Layout,
	}
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value == "true" && com == ""
			}
		}
		if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// configPath is the CLI config file commands read (--config, $CROSSDOCK_CONFIG, else
// ~/.config/crossdock/config.yaml) and whether it exists.
func configPath() (string, bool) {
	path := g.config
	if path == "" {
		path = cliconfig.DefaultPath()
	}
	if path == "" {
		return "", false
	}
	_, err := os.Stat(path)
	return path, err == nil
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, Go version and on-disk layout versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b := currentBuild()
			if g.output != "table" {
				return printPlain(cmd.OutOrStdout(), b)
			}
			w := cmd.OutOrStdout()
			commit := b.Commit
			if b.Modified {
				commit += " (modified)"
			}
			cfg := b.CLIConfig
			if !b.CLIConfigExists {
				cfg += " (not found)"
			}
			fmt.Fprintf(w, "crossdock %s\n", b.Version)
			fmt.Fprintf(w, "commit:        %s\n", commit)
			fmt.Fprintf(w, "built:         %s\n", b.Date)
			fmt.Fprintf(w, "go:            %s %s\n", b.Go, b.Platform)
			fmt.Fprintf(w, "ledger layout: %d\n", b.LedgerLayout)
			fmt.Fprintf(w, "outbox layout: %d\n", b.OutboxLayout)
			fmt.Fprintf(w, "cli config:    %s\n", cfg)
			return nil
		},
	}
}

// printPlain writes v (a plain struct) as JSON or YAML per -o.
func printPlain(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	switch g.output {
	case "yaml":
		_, err = w.Write(b)
		return err
	case "json":
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", j)
		return err
	}
	return errors.New("--output: want table, json or yaml")
}
