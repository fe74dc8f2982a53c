package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/crossdock/crossdock/internal/release"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// Upgrades (docs/fleet.md): the control plane sends an UpgradeCommand; the agent
// downloads the binary over its mTLS link into Config.UpgradeDir, checks its size and
// SHA-256, and hands it to Config.Upgrade, which swaps it in (cmd/crossdock: the
// supervisor of `crossdock agent` swaps, starts it and rolls back when it does not
// connect). An agent without Config.Upgrade refuses. Every outcome is reported
// (UpgradeReport), and a failure before the swap leaves the running build untouched.

// ErrNotUpgradable answers an UpgradeCommand to an agent that cannot swap its binary.
var ErrNotUpgradable = errors.New("not upgradable: not run by crossdock agent")

// UpgradeFunc takes over a downloaded, checked binary at path for cmd. It returns an
// error when the upgrade cannot go on (the agent keeps running and reports it), and
// otherwise arranges for the agent to stop so the new build can start.
type UpgradeFunc func(ctx context.Context, cmd *uplinkv1.UpgradeCommand, path string) error

// upgrades is the agent's upgrade state: the report it sends, and whether one runs.
type upgrades struct {
	mu      sync.Mutex
	report  *uplinkv1.UpgradeReport
	running bool
}

func (u *upgrades) Report() *uplinkv1.UpgradeReport {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.report
}

// begin reports whether cmd should be carried out: not while another runs, and not a
// rollout this agent already answered (the control plane may send it again after a
// reconnect).
func (u *upgrades) begin(cmd *uplinkv1.UpgradeCommand) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.running || u.report.GetRolloutId() == cmd.GetRolloutId() {
		return false
	}
	u.running = true
	return true
}

func (u *upgrades) end(r *uplinkv1.UpgradeReport) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.running = false
	if r != nil {
		u.report = r
	}
}

// UpgradeReport is what the agent reports about the last upgrade command.
func (a *Agent) UpgradeReport() *uplinkv1.UpgradeReport { return a.upgrades.Report() }

// offerUpgrade starts carrying out cmd, unless it should not be (upgrades.begin). Called
// from the uplink's receive loop: it does not block.
func (a *Agent) offerUpgrade(cmd *uplinkv1.UpgradeCommand) {
	if !a.upgrades.begin(cmd) {
		return
	}
	ctx := a.runCtx
	go func() {
		err := a.upgrade(ctx, cmd)
		if err == nil {
			a.upgrades.end(nil) // the agent stops; the next build reports
			return
		}
		a.logger.Error("upgrade failed; this build keeps running", "rollout", cmd.GetRolloutId(), "version", cmd.GetVersion(), "err", err)
		a.upgrades.end(&uplinkv1.UpgradeReport{RolloutId: cmd.GetRolloutId(), Version: cmd.GetVersion(), State: "failed", Reason: err.Error()})
		a.host.Notify() // the uplink sends the report with the connectors' states
	}()
}

func (a *Agent) upgrade(ctx context.Context, cmd *uplinkv1.UpgradeCommand) error {
	switch {
	case a.cfg.Upgrade == nil || a.cfg.UpgradeDir == "":
		return ErrNotUpgradable
	case cmd.GetOs() != runtime.GOOS || cmd.GetArch() != runtime.GOARCH:
		return fmt.Errorf("release is for %s/%s, this agent runs on %s/%s", cmd.GetOs(), cmd.GetArch(), runtime.GOOS, runtime.GOARCH)
	}
	a.logger.Info("upgrade: downloading", "rollout", cmd.GetRolloutId(), "version", cmd.GetVersion(), "sha256", cmd.GetSha256(), "size", cmd.GetSize())
	path, err := release.Fetch(a.cfg.UpgradeDir, cmd.GetSha256(), cmd.GetSize(), 0o700, func(w io.Writer) error {
		return a.uplink.DownloadRelease(ctx, cmd.GetSha256(), w)
	})
	if err != nil {
		return err
	}
	return a.cfg.Upgrade(ctx, proto.Clone(cmd).(*uplinkv1.UpgradeCommand), path)
}
