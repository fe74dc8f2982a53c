// Command brokenagent is a deliberately broken agent build for the upgrade tests: it
// answers `version -o json` like crossdock, so it passes the preflight before the swap,
// but as an agent it exits at once (mode "exit") or hangs without ever connecting
// (mode "hang"). Version and mode are set at build time:
//
//	go build -ldflags "-X main.version=C -X main.mode=hang" ./internal/testkit/brokenagent
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var (
	version = "broken"
	mode    = "exit"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"version": version})
		return
	}
	fmt.Fprintf(os.Stderr, "brokenagent %s: broken on purpose (%s)\n", version, mode)
	if mode == "hang" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		<-sigs
	}
	os.Exit(3)
}
