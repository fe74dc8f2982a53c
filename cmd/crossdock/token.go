package main

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage enrollment tokens"}
	var kind, name string
	var replace bool
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a short-lived, single-use enrollment token that pins the cluster CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k := adminv1.TokenKind_TOKEN_KIND_AGENT
			switch kind {
			case "agent":
			case "server":
				k = adminv1.TokenKind_TOKEN_KIND_SERVER
			default:
				return fmt.Errorf("--kind %q is not a token kind: the kinds are agent (enrolls an agent) and server (joins a control plane node)", kind)
			}
			c, err := adminClient()
			if err != nil {
				return err
			}
			res, err := c.CreateToken(cmd.Context(), connect.NewRequest(&adminv1.CreateTokenRequest{Kind: k, Ttl: durationpb.New(ttl), AgentName: name, Replace: replace}))
			if err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetToken())
			cmd.PrintErrf("token %s expires at %s; it can be used once\n", res.Msg.GetTokenId(), fmtTime(res.Msg.GetExpiresAt()))
			return nil
		},
	}
	create.Flags().StringVar(&kind, "kind", "agent", "what the token enrolls: agent or server")
	create.Flags().DurationVar(&ttl, "ttl", 15*time.Minute, "how long the token is valid (at most 24h)")
	create.Flags().StringVar(&name, "name", "", "fix the enrolling agent's id")
	create.Flags().BoolVar(&replace, "replace", false, "let the token enroll --name although it is enrolled (or revoked): the new agent starts a new incarnation and the old one is retired")
	cmd.AddCommand(create)
	return cmd
}
