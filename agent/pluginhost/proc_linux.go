package pluginhost

import (
	"os/exec"
	"syscall"
)

// dieWithAgent makes the kernel kill the plugin if the agent dies (even by SIGKILL), so
// no orphan keeps a replication slot or a file lock the restarted agent needs. Plugins
// built with plugins/sdk also exit on their own when their parent changes.
func dieWithAgent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
