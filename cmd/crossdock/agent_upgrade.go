package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/crossdock/crossdock/agent"
	"github.com/crossdock/crossdock/agent/uplink"
	"github.com/crossdock/crossdock/internal/platform/fsutil"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Agent upgrades, the worker's side (docs/fleet.md). `crossdock agent` runs as a small
// supervisor (agent_supervisor_linux.go) that starts the agent itself as a child, the
// worker. The two talk through files in <data dir>/upgrade:
//
//   - <sha256>: a release the worker downloaded and checked (agent.FetchRelease);
//   - pending.json: written by the worker once the release passed its preflight, just
//     before it stops (exit status exitUpgrade): the supervisor swaps the binary then;
//   - connected: written by a worker on trial (a new build) once its uplink is
//     connected: the supervisor keeps the new build;
//   - report.json: the outcome of the last upgrade (an UpgradeReport), written by the
//     supervisor (upgraded, rolled back) or the worker (failed before the swap), sent by
//     every worker after it connects.

const (
	// envAgentWorker marks the worker: the supervisor sets it to the upgrade dir.
	envAgentWorker = "CROSSDOCK_AGENT_WORKER"
	// envAgentTrial marks a worker running a new build on trial.
	envAgentTrial = "CROSSDOCK_AGENT_TRIAL"
	// exitUpgrade is the worker's exit status when it stopped for an upgrade.
	exitUpgrade = 75

	upgradeDirName       = "upgrade"
	upgradePendingFile   = "pending.json"
	upgradeConnectedFile = "connected"
	upgradeReportFile    = "report.json"
)

// preflightTimeout bounds `NEW version -o json` before the swap.
var preflightTimeout = 10 * time.Second

// pendingUpgrade is pending.json.
type pendingUpgrade struct {
	RolloutID  string `json:"rollout_id"`
	Version    string `json:"version"`
	SHA256     string `json:"sha256"`
	Binary     string `json:"binary"`
	DeadlineMS int64  `json:"deadline_ms"`
}

func readPending(dir string) (*pendingUpgrade, error) {
	b, err := os.ReadFile(filepath.Join(dir, upgradePendingFile))
	if err != nil {
		return nil, err
	}
	p := &pendingUpgrade{}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("%s: %w", upgradePendingFile, err)
	}
	return p, nil
}

// readUpgradeReport reads report.json; nil when there is none or it cannot be read.
func readUpgradeReport(dir string) *uplinkv1.UpgradeReport {
	b, err := os.ReadFile(filepath.Join(dir, upgradeReportFile))
	if err != nil {
		return nil
	}
	r := &uplinkv1.UpgradeReport{}
	if err := protojson.Unmarshal(b, r); err != nil {
		slog.Warn("the last upgrade report cannot be read; not sent", "file", upgradeReportFile, "err", err)
		return nil
	}
	return r
}

func writeUpgradeReport(dir string, r *uplinkv1.UpgradeReport) error {
	b, err := protojson.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode upgrade report: %w", err)
	}
	return fsutil.WriteFileAtomic(dir, upgradeReportFile, b, 0o600)
}

// preflight runs `bin version -o json` and checks it names version: a binary that
// cannot even say that is not swapped in.
func preflight(ctx context.Context, bin, version string) error {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version", "-o", "json").Output()
	if err != nil {
		return fmt.Errorf("preflight `%s version -o json`: %w", filepath.Base(bin), err)
	}
	var bi struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &bi); err != nil {
		return fmt.Errorf("preflight: `version -o json` printed no build information: %w", err)
	}
	if bi.Version != version {
		return fmt.Errorf("preflight: the binary says it is version %q, the release %q", bi.Version, version)
	}
	return nil
}

// worker sets up cfg for a worker of the supervisor: upgrades are taken (preflight,
// then pending.json and a stop through cancel), the last report is sent, and a worker
// on trial says when it is connected. upgrading is set once the worker stops for an
// upgrade.
func setupWorker(cfg *agent.Config, dir string, cancel context.CancelFunc, upgrading *atomic.Bool) {
	cfg.UpgradeDir = dir
	cfg.UpgradeReport = readUpgradeReport(dir)
	cfg.Upgrade = func(ctx context.Context, c *uplinkv1.UpgradeCommand, path string) error {
		if err := preflight(ctx, path, c.GetVersion()); err != nil {
			_ = os.Remove(path)
			return err
		}
		b, err := json.Marshal(pendingUpgrade{RolloutID: c.GetRolloutId(), Version: c.GetVersion(), SHA256: c.GetSha256(), Binary: path, DeadlineMS: c.GetDeadlineMs()})
		if err == nil {
			err = fsutil.WriteFileAtomic(dir, upgradePendingFile, b, 0o600)
		}
		if err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
		slog.Info("upgrade: release checked; stopping so the supervisor swaps it in", "version", c.GetVersion(), "rollout", c.GetRolloutId())
		upgrading.Store(true)
		cancel() // Run returns once the outbox is closed
		return nil
	}
}

// markConnected writes the connected file once a on trial is connected.
func markConnected(ctx context.Context, a *agent.Agent, dir string) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if a.Status().GetUplinkState() == uplink.StateConnected {
			if err := fsutil.WriteFileAtomic(dir, upgradeConnectedFile, []byte(agent.Version+"\n"), 0o600); err != nil {
				slog.Error("upgrade: cannot tell the supervisor this build is connected; it will roll back", "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
