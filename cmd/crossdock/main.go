// Command crossdock is the one Crossdock binary: control plane server, agent, and the
// operators' CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startCPUProfile()()
	if cmd, err := newRootCmd().ExecuteContextC(ctx); err != nil {
		err = explainTransport(cmd, err)
		code, print := exitStatus(err)
		if print {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(code)
	}
}

// startCPUProfile writes a CPU profile of the whole process to $CROSSDOCK_CPUPROFILE.<pid>
// when that variable is set (for benchmarks: every process of a cluster writes its own).
// The returned func stops it; a process that is killed leaves no profile.
func startCPUProfile() func() {
	path := os.Getenv("CROSSDOCK_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
