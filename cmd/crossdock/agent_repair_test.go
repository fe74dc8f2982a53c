package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
)

// stop ends a process with SIGTERM (the agent closes its outbox cleanly) and waits.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("process did not stop on SIGTERM within 30s")
	}
}

// TestAgentRepairTruncatedValueLog: an agent whose outbox holds 2,000 undelivered
// events has its value log cut in half. It then refuses to start, naming the damage and
// the repair command; `crossdock agent repair` salvages the intact events and reports
// the lost ones; the agent then starts and delivers exactly the salvaged events, and
// numbers new events above every seq it gave before.
func TestAgentRepairTruncatedValueLog(t *testing.T) {
	const total = 2000
	c := startServer(t)
	token, err := run(t, "token", "create", "--config", c.config, "--name", "repaired")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	local := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ag := start(t, "agent-enroll", "agent", "--data-dir", dataDir, "--server", c.addr, "--local-addr", local,
		"--enroll-token", strings.TrimSpace(token))
	waitConnected := func() {
		controlplanetest.WaitFor(t, 30*time.Second, "agent connected", func() bool {
			st, err := agentStatus(local)
			return err == nil && st.GetUplinkState() == "connected"
		})
	}
	waitConnected()
	ag.stop(t)

	// Offline (no reachable control plane): the events stay in the outbox.
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ag = start(t, "agent-offline", "agent", "--data-dir", dataDir, "--server", dead, "--local-addr", local)
	controlplanetest.WaitFor(t, 30*time.Second, "agent local API", func() bool { _, err := agentStatus(local); return err == nil })
	if _, err := run(t, "publish", "--file", writeEvents(t, total), "--agent", local, "--batch", "250"); err != nil {
		t.Fatal(err)
	}
	ag.stop(t)

	// Each Badger open starts a new value-log file: cut the newest.
	vlogs, _ := filepath.Glob(filepath.Join(dataDir, "outbox", "*.vlog"))
	if len(vlogs) == 0 {
		t.Fatal("no value-log file in the outbox")
	}
	vlog := vlogs[len(vlogs)-1]
	fi, err := os.Stat(vlog)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vlog, fi.Size()/2); err != nil {
		t.Fatal(err)
	}

	refused := start(t, "agent-damaged", "agent", "--data-dir", dataDir, "--server", c.addr, "--local-addr", local)
	select {
	case <-refused.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not refuse its damaged outbox within 20s")
	}
	logged, _ := os.ReadFile(refused.log)
	if refused.err == nil {
		t.Fatalf("the agent exited 0 on a damaged outbox:\n%s", logged)
	}
	for _, want := range []string{"outbox damaged", filepath.Base(vlog), "unreadable: seqs ", "crossdock agent repair --data-dir " + dataDir} {
		if !strings.Contains(string(logged), want) {
			t.Errorf("agent start error does not say %q:\n%s", want, logged)
		}
	}

	out, err := run(t, "agent", "repair", "--data-dir", dataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair:\n%s", out)
	m := regexp.MustCompile(`salvaged: +(\d+) events, \d+ bytes, seqs 1-(\d+)\n`).FindStringSubmatch(out)
	l := regexp.MustCompile(`lost: +(\d+) events, \d+ bytes, seqs (\d+)-2000\n`).FindStringSubmatch(out)
	if m == nil || l == nil {
		t.Fatalf("repair output does not report salvaged and lost seqs:\n%s", out)
	}
	salvaged, _ := strconv.Atoi(m[1])
	lastSalvaged, _ := strconv.Atoi(m[2])
	lost, _ := strconv.Atoi(l[1])
	firstLost, _ := strconv.Atoi(l[2])
	if salvaged == 0 || lost == 0 || salvaged+lost != total || lastSalvaged != salvaged || firstLost != salvaged+1 {
		t.Fatalf("salvaged %d (1-%d), lost %d (%d-2000): inconsistent", salvaged, lastSalvaged, lost, firstLost)
	}
	if !strings.Contains(out, "next seq:    2001") {
		t.Errorf("repair output does not give the next seq 2001:\n%s", out)
	}
	aside, _ := filepath.Glob(filepath.Join(dataDir, "outbox.damaged-*"))
	if len(aside) != 1 || !strings.Contains(out, aside[0]) {
		t.Fatalf("damaged outbox kept in %v; output:\n%s", aside, out)
	}
	if again, err := run(t, "agent", "repair", "--data-dir", dataDir); err != nil || !strings.Contains(again, "intact; nothing to repair") {
		t.Fatalf("second repair: %v\n%s", err, again)
	}

	start(t, "agent-repaired", "agent", "--data-dir", dataDir, "--server", c.addr, "--local-addr", local)
	waitConnected()
	one := filepath.Join(t.TempDir(), "one.jsonl")
	line := `{"inventoryLevel":{"sku":"A-1","location":"WH1","onHand":"10"},"source":{"position":"after-repair"}}`
	if err := os.WriteFile(one, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pubOut, err := runCombined(t, "publish", "--file", one, "--agent", local)
	if err != nil || !strings.Contains(pubOut, "outbox seq 2001-2001") {
		t.Fatalf("publish after repair: %v\n%s", err, pubOut)
	}
	controlplanetest.WaitFor(t, 60*time.Second, "outbox drained", func() bool {
		st, err := agentStatus(local)
		return err == nil && st.GetOutbox().GetPendingEvents() == 0
	})
	evs := c.allEvents(t)
	if len(evs) != salvaged+1 {
		t.Fatalf("the ledger holds %d events, want the %d salvaged and 1 new", len(evs), salvaged)
	}
	for i, ce := range evs[:salvaged] {
		if pos := ce.GetEvent().GetSource().GetPosition(); pos != "sample:"+strconv.Itoa(i+1) {
			t.Fatalf("ledger event %d has position %q, want sample:%d", i, pos, i+1)
		}
	}
	if pos := evs[salvaged].GetEvent().GetSource().GetPosition(); pos != "after-repair" {
		t.Fatalf("the last ledger event has position %q, want after-repair", pos)
	}
}

// runCombined runs a CLI command to completion and returns its standard output and
// error together (publish reports on standard error).
func runCombined(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "CROSSDOCK_CONFIG=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("crossdock %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
