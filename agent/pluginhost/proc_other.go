//go:build !linux

package pluginhost

import "os/exec"

// dieWithAgent: only Linux has a parent-death signal; elsewhere plugins built with
// plugins/sdk exit on their own when their parent changes.
func dieWithAgent(*exec.Cmd) {}
