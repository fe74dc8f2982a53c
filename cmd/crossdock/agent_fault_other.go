//go:build !unix

package main

import "github.com/crossdock/crossdock/agent"

// applyFaultHooks: the fault-injection hooks of agent_fault.go exist on unix only.
func applyFaultHooks(*agent.Config) {}
