package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"google.golang.org/protobuf/proto"

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
	case !validSHA256(cmd.GetSha256()):
		return fmt.Errorf("sha256 %q is not 64 hex digits", cmd.GetSha256())
	}
	a.logger.Info("upgrade: downloading", "rollout", cmd.GetRolloutId(), "version", cmd.GetVersion(), "sha256", cmd.GetSha256(), "size", cmd.GetSize())
	path, err := FetchRelease(a.cfg.UpgradeDir, cmd.GetSha256(), cmd.GetSize(), func(w io.Writer) error {
		return a.uplink.DownloadRelease(ctx, cmd.GetSha256(), w)
	})
	if err != nil {
		return err
	}
	return a.cfg.Upgrade(ctx, proto.Clone(cmd).(*uplinkv1.UpgradeCommand), path)
}

func validSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == s
}

// FetchRelease writes a binary through download into dir/<sum>, checking on the way
// that it has size bytes and SHA-256 sum; only then is it put at its name, executable.
// Anything else leaves nothing behind.
func FetchRelease(dir, sum string, size int64, download func(io.Writer) error) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("upgrade: create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return "", fmt.Errorf("upgrade: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	defer f.Close()
	h := sha256.New()
	lw := &limitWriter{w: io.MultiWriter(f, h), left: size}
	if err := download(lw); err != nil {
		return "", err
	}
	if lw.over || lw.left != 0 {
		return "", fmt.Errorf("upgrade: the download has %d bytes, the release %d: refused", size-lw.left, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", fmt.Errorf("upgrade: checksum mismatch: the download has sha256 %s, the release %s: refused", got, sum)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("upgrade: %w", err)
	}
	if err := f.Chmod(0o700); err != nil {
		return "", fmt.Errorf("upgrade: %w", err)
	}
	path := filepath.Join(dir, sum)
	if err := os.Rename(f.Name(), path); err != nil {
		return "", fmt.Errorf("upgrade: %w", err)
	}
	return path, nil
}

// limitWriter refuses bytes beyond left.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, errors.New("upgrade: the download is larger than the release")
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}
