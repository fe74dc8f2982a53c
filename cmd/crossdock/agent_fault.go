//go:build unix

package main

import (
	"log/slog"
	"os"
	"syscall"

	"github.com/crossdock/crossdock/agent"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// faultKillAfterSinkWrite names the fault-injection variable for tests only: when it
// names a file that exists, the agent deletes the file and SIGKILLs itself right after a
// sink connector's write returned and before the order.ack is published, the moment
// a crash would lose the ERP's answer if the ack were not idempotent (see
// TestEndToEndKillAgentBetweenERPWriteAndAck). One kill per file. Not documented for
// operators.
const faultKillAfterSinkWrite = "CROSSDOCK_TEST_KILL_AFTER_SINK_WRITE"

// applyFaultHooks sets cfg's fault hooks from the environment (tests only).
func applyFaultHooks(cfg *agent.Config) {
	trigger := os.Getenv(faultKillAfterSinkWrite)
	if trigger == "" {
		return
	}
	cfg.AfterSinkWrite = func(connector string, ev *eventv1.Event) {
		if os.Remove(trigger) != nil {
			return // no trigger file (any more): write on
		}
		slog.Warn("fault injection: SIGKILL after the sink write, before the order.ack", "connector", connector, "event", ev.GetId())
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
