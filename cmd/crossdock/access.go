package main

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// `crossdock access tokens` (named admin credentials with a role and an expiry) and
// `crossdock audit ls` (every mutating admin call); docs/fleet.md.

func accessClient() (adminv1connect.AccessServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return adminv1connect.NewAccessServiceClient(hc, addr), nil
}

func newAccessCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "access", Short: "Named admin credentials with roles (viewer, operator, admin)"}
	tokens := &cobra.Command{Use: "tokens", Short: "Create, list and revoke admin credentials"}
	var role string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin [--ttl 720h]",
		Short: "Create a named admin credential and print its token (shown once)",
		Long: `Create a named admin credential. viewer reads everything; operator also retries,
replays and applies routing; admin also manages tokens, credentials, partners, cluster
membership, snapshots and restores. The history and the audit trail show its name.`,
		Example: "  crossdock access tokens create alice --role operator --ttl 720h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := accessClient()
			if err != nil {
				return err
			}
			res, err := c.CreateCredential(cmd.Context(), connect.NewRequest(&adminv1.CreateCredentialRequest{Name: args[0], Role: role, Ttl: durationpb.New(ttl)}))
			if err != nil {
				return fmt.Errorf("create credential %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetToken())
			cmd.PrintErrf("credential %s (%s) expires %s; give it to its holder as CROSSDOCK_TOKEN or --token\n", args[0], role, fmtTime(res.Msg.GetCredential().GetExpiresAt()))
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "viewer", "viewer, operator or admin")
	create.Flags().DurationVar(&ttl, "ttl", 720*time.Hour, "lifetime (at most 8784h)")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List admin credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := accessClient()
			if err != nil {
				return err
			}
			res, err := c.ListCredentials(cmd.Context(), connect.NewRequest(&adminv1.ListCredentialsRequest{}))
			if err != nil {
				return fmt.Errorf("list credentials: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "NAME", "ROLE", "STATE", "EXPIRES", "CREATED", "CREATED BY")
			for _, cr := range res.Msg.GetCredentials() {
				state := "active"
				switch {
				case cr.GetRevoked():
					state = "revoked " + fmtTime(cr.GetRevokedAt())
				case cr.GetExpiresAt().AsTime().Before(time.Now()):
					state = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cr.GetName(), cr.GetRole(), state, fmtTime(cr.GetExpiresAt()), fmtTime(cr.GetCreatedAt()), dash(cr.GetCreatedBy()))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an admin credential at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := accessClient()
			if err != nil {
				return err
			}
			if _, err := c.RevokeCredential(cmd.Context(), connect.NewRequest(&adminv1.RevokeCredentialRequest{Name: args[0]})); err != nil {
				return fmt.Errorf("revoke credential %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "credential %s revoked\n", args[0])
			return nil
		},
	}
	tokens.AddCommand(create, ls, revoke)
	cmd.AddCommand(tokens)
	return cmd
}

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit trail of mutating admin calls"}
	var actor, kind string
	var since time.Duration
	var limit uint32
	ls := &cobra.Command{
		Use:     "ls [--actor NAME] [--kind ApplyDocuments] [--since 24h]",
		Short:   "List mutating admin calls: when, who, what, and the outcome",
		Example: "  crossdock audit ls --actor alice --since 24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := accessClient()
			if err != nil {
				return err
			}
			req := &adminv1.ListAuditRequest{Actor: actor, Kind: kind, Limit: limit}
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			res, err := c.ListAudit(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("list audit: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "AT", "ACTOR", "ROLE", "CALL", "OUTCOME")
			for _, e := range res.Msg.GetEntries() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTime(e.GetAt()), e.GetActor(), e.GetRole(), e.GetProcedure(), e.GetOutcome())
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&actor, "actor", "", "only calls by this credential name")
	ls.Flags().StringVar(&kind, "kind", "", "only calls whose procedure contains this (ApplyDocuments, RoutingService)")
	ls.Flags().DurationVar(&since, "since", 0, "only calls within this long (24h)")
	ls.Flags().Uint32Var(&limit, "limit", 100, "at most this many, newest last")
	cmd.AddCommand(ls)
	return cmd
}
