package main

import (
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Inspect enrolled agents"}
	cmd.AddCommand(newAgentsLsCmd()) // fleet.go
	cmd.AddCommand(newAgentsDescribeCmd())
	cmd.AddCommand(newAgentsRevokeCmd())
	cmd.AddCommand(newAgentsLabelCmd())   // fleet.go
	cmd.AddCommand(newAgentsUpgradeCmd()) // releases.go
	return cmd
}

// agentState is "revoked", "cert expired" or "active".
func agentState(a *adminv1.Agent) string {
	switch {
	case a.GetRevoked():
		return "revoked"
	case a.GetCertNotAfter() != nil && a.GetCertNotAfter().AsTime().Before(time.Now()):
		return "cert expired"
	}
	return "active"
}
