//go:build !linux

package main

import "errors"

// supervised reports whether `crossdock agent` runs its supervisor on this platform:
// only Linux has one (the kernel must kill the worker with its supervisor); elsewhere
// the agent runs in one process and refuses upgrades.
const supervised = false

func superviseAgent(string, []string) error {
	return errors.New("agent supervisor: Linux only")
}
