package main

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/internal/seal"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

func secretsClient() (adminv1connect.SecretsServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewSecretsServiceClient(hc, addr), nil
}

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "The secrets key: new keys, what is sealed under which key, re-sealing after a rotation",
		Long: `The control plane stores webhook and stream secrets and the cluster CA key sealed
(AES-256-GCM) under the key file named by the server's --secrets-key (default
<data-dir>.secrets.key). Raft, the ledger and snapshots never hold them in clear.
Rotation: see docs/operations.md, "Secrets at rest".`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "keygen",
		Short: "Print a new random key as a key file line (\"<id> <base64>\"); nothing is sent anywhere",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			line, err := seal.NewKeyLine()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the answering node's keys and how many stored secrets are sealed under each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := secretsClient()
			if err != nil {
				return err
			}
			res, err := c.GetSecretsStatus(cmd.Context(), connect.NewRequest(&adminv1.GetSecretsStatusRequest{}))
			if err != nil {
				return fmt.Errorf("secrets status: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "node:  %s\nkeys:  %s (the first seals)\n\n", res.Msg.GetNodeId(), strings.Join(res.Msg.GetKeyIds(), ", "))
			tw := newTable(w, "KEY", "HELD", "DESTINATIONS", "CA KEY")
			for _, s := range res.Msg.GetSealed() {
				id, held := s.GetKeyId(), "yes"
				if id == "" {
					id, held = "(in clear)", "-"
				} else if !s.GetHeld() {
					held = "NO"
				}
				ca := "no"
				if s.GetCaKey() {
					ca = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", id, held, s.GetDestinations(), ca)
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "reseal",
		Short: "Seal every stored secret that is in clear or under an older key with the sealing key",
		Long: `Seal every stored secret (destination secrets, the CA key) that is in clear or under
another key with the sealing key, the first line of the key file, through raft. Run it
once every node's key file has the new key first; old keys can leave the files after
it, once no backup or raft snapshot you keep predates it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := secretsClient()
			if err != nil {
				return err
			}
			res, err := c.ResealSecrets(cmd.Context(), connect.NewRequest(&adminv1.ResealSecretsRequest{}))
			if err != nil {
				return fmt.Errorf("secrets reseal: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sealed under key %s: %d destination secret(s)%s, CA key %s\n",
				res.Msg.GetKeyId(), len(res.Msg.GetDestinations()), listSuffix(res.Msg.GetDestinations()), map[bool]string{true: "re-sealed", false: "already sealed under it"}[res.Msg.GetCaKey()])
			return nil
		},
	})
	return cmd
}

func listSuffix(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}
