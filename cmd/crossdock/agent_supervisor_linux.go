package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/crossdock/crossdock/internal/platform/metrics"
	uplinkv1 "github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1"
)

// The supervisor of `crossdock agent` (agent_upgrade.go has the worker's side). It runs
// the agent as a child, forwards SIGINT and SIGTERM to it and exits as it exits. When
// the child stops for an upgrade it keeps the running binary as <exe>.prev, renames the
// release over the executable (staged in the executable's own directory, so the rename
// is atomic) and starts it on trial: if it is not connected within the deadline, or
// exits first, it is killed, <exe>.prev goes back, the previous build starts again and
// reports the rollback. It needs none of the new build's code to do so. The supervisor
// itself keeps running the build it started with until the agent is restarted.

// supervised reports whether `crossdock agent` runs its supervisor on this platform.
const supervised = true

// outboxFreeWait bounds how long a supervisor waits, before it starts a worker, for a
// worker of a killed supervisor to let go of the outbox.
const outboxFreeWait = 5 * time.Second

type supervisor struct {
	exe, dir, outbox string
	args             []string
	notify           string // NOTIFY_SOCKET for the worker: the relay's
	log              *slog.Logger

	mu       sync.Mutex
	child    *exec.Cmd
	stopping bool
}

// superviseAgent runs the agent (this executable with args, as a worker) until it
// exits for a reason other than an upgrade, and returns its exit status.
func superviseAgent(dataDir string, args []string) error {
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return fmt.Errorf("agent supervisor: find this executable: %w", err)
	}
	s := &supervisor{exe: exe, dir: filepath.Join(dataDir, upgradeDirName), outbox: filepath.Join(dataDir, "outbox"), args: args,
		log: slog.Default().With("component", "supervisor")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("agent supervisor: %w", err)
	}
	// systemd takes READY=1 from the main process: the worker's is relayed.
	notify, stopRelay, err := metrics.RelayNotify(s.log)
	if err != nil {
		return fmt.Errorf("agent supervisor: %w", err)
	}
	defer stopRelay()
	s.notify = notify
	// The kernel kills a worker whose supervisor died (Pdeathsig), which it ties to
	// the thread that started the worker: this goroutine keeps its thread.
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go s.forward(sigs)
	return s.run()
}

// forward passes SIGINT and SIGTERM on to the worker; the supervisor then exits when
// it does.
func (s *supervisor) forward(sigs <-chan os.Signal) {
	for sig := range sigs {
		s.mu.Lock()
		s.stopping = true
		if s.child != nil && s.child.Process != nil {
			_ = s.child.Process.Signal(sig)
		}
		s.mu.Unlock()
	}
}

func (s *supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// start starts a worker; trial marks a new build on trial.
func (s *supervisor) start(trial bool) (*exec.Cmd, <-chan error, error) {
	waitUnlocked(s.outbox, outboxFreeWait)
	cmd := exec.Command(s.exe, s.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envAgentWorker+"="+s.dir)
	if s.notify != "" {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+s.notify)
	}
	if trial {
		cmd.Env = append(cmd.Env, envAgentTrial+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, nil, errStopped
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("agent supervisor: start %s: %w", s.exe, err)
	}
	s.child = cmd
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return cmd, done, nil
}

var errStopped = errors.New("agent supervisor: stopped")

func (s *supervisor) run() error {
	var trial *pendingUpgrade
	for {
		cmd, done, err := s.start(trial != nil)
		if errors.Is(err, errStopped) {
			return nil
		}
		if err != nil {
			if trial != nil {
				s.rollback(trial, err.Error())
				trial = nil
				continue
			}
			return err
		}
		if trial != nil {
			if reason, exited := s.watchTrial(trial, done); reason != "" {
				if !exited {
					_ = cmd.Process.Kill()
					<-done
				}
				s.rollback(trial, reason)
				trial = nil
				if s.isStopping() {
					return nil
				}
				continue
			}
			s.log.Info("upgrade: the new build is connected; keeping it", "version", trial.Version, "previous", s.exe+".prev")
			s.report(&uplinkv1.UpgradeReport{RolloutId: trial.RolloutID, Version: trial.Version, State: "upgraded"})
			trial = nil
		}
		err = <-done
		code := cmd.ProcessState.ExitCode()
		if code == exitUpgrade && !s.isStopping() {
			p, err := readPending(s.dir)
			if err == nil {
				err = s.swap(p)
			}
			_ = os.Remove(filepath.Join(s.dir, upgradePendingFile))
			if err != nil {
				s.log.Error("upgrade: the release cannot be swapped in; the running build starts again", "err", err)
				if p != nil {
					s.report(&uplinkv1.UpgradeReport{RolloutId: p.RolloutID, Version: p.Version, State: "failed", Reason: err.Error()})
				}
				continue
			}
			trial = p
			continue
		}
		return exitLike(cmd.ProcessState, err)
	}
}

// watchTrial waits until the worker on trial is connected (""), or says why not, and
// whether the worker exited.
func (s *supervisor) watchTrial(p *pendingUpgrade, done <-chan error) (string, bool) {
	deadline := time.Duration(p.DeadlineMS) * time.Millisecond
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	connected := filepath.Join(s.dir, upgradeConnectedFile)
	for {
		if _, err := os.Stat(connected); err == nil {
			return "", false
		}
		select {
		case err := <-done:
			return fmt.Sprintf("version %s exited before it was connected (%v)", p.Version, err), true
		case <-timer.C:
			return fmt.Sprintf("version %s was not connected within the %s deadline", p.Version, deadline), false
		case <-tick.C:
		}
	}
}

// swap puts the release of p at the executable's path, keeping the running binary as
// <exe>.prev.
func (s *supervisor) swap(p *pendingUpgrade) error {
	_ = os.Remove(filepath.Join(s.dir, upgradeConnectedFile))
	staged := filepath.Join(filepath.Dir(s.exe), "."+filepath.Base(s.exe)+".new")
	if err := copyFile(p.Binary, staged, 0o755); err != nil {
		return fmt.Errorf("stage the release beside %s (its directory must be writable by the agent's user): %w", s.exe, err)
	}
	prev := s.exe + ".prev"
	_ = os.Remove(prev)
	if err := os.Link(s.exe, prev); err != nil {
		_ = os.Remove(staged)
		return fmt.Errorf("keep the running build as %s: %w", prev, err)
	}
	if err := os.Rename(staged, s.exe); err != nil {
		_ = os.Remove(staged)
		return fmt.Errorf("swap in the release: %w", err)
	}
	_ = os.Remove(p.Binary)
	s.log.Info("upgrade: release swapped in; starting it on trial", "version", p.Version, "deadline_ms", p.DeadlineMS, "exe", s.exe)
	return nil
}

// rollback puts <exe>.prev back and records why.
func (s *supervisor) rollback(p *pendingUpgrade, reason string) {
	s.log.Error("upgrade: rolling back to the previous build", "version", p.Version, "reason", reason)
	if err := os.Rename(s.exe+".prev", s.exe); err != nil {
		s.log.Error("upgrade: cannot put the previous build back", "err", err)
		reason += fmt.Sprintf("; putting the previous build back failed: %v", err)
	}
	s.report(&uplinkv1.UpgradeReport{RolloutId: p.RolloutID, Version: p.Version, State: "rolled_back", Reason: reason})
}

func (s *supervisor) report(r *uplinkv1.UpgradeReport) {
	if err := writeUpgradeReport(s.dir, r); err != nil {
		s.log.Error("upgrade: cannot record the report", "err", err)
	}
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}

// exitLike ends the supervisor as its worker ended: the same signal or exit status.
func exitLike(st *os.ProcessState, waitErr error) error {
	if st == nil {
		return waitErr
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		signal.Reset(ws.Signal())
		_ = syscall.Kill(os.Getpid(), ws.Signal())
		return &exitError{code: 128 + int(ws.Signal())}
	}
	if c := st.ExitCode(); c != 0 {
		return &exitError{code: c}
	}
	return nil
}

// waitUnlocked waits up to max until no process holds the flock on dir (the outbox
// takes it), so a worker left by a supervisor that was killed is gone first.
func waitUnlocked(dir string, max time.Duration) {
	f, err := os.Open(dir)
	if err != nil {
		return
	}
	defer f.Close()
	end := time.Now().Add(max)
	for {
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			return
		}
		if time.Now().After(end) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
