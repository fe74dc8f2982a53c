package main

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
)

func partnerAdminClient() (partnerv1connect.PartnerAdminServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return partnerv1connect.NewPartnerAdminServiceClient(hc, addr), nil
}

// parseLifetime reads a key lifetime: a Go duration ("36h", "90m") or whole days ("90d").
// "0" or "" means no expiry.
func parseLifetime(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 3650 {
			return 0, fmt.Errorf("%q: want whole days from 0 to 3650 (e.g. 90d) or a duration (e.g. 36h)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want whole days (e.g. 90d) or a duration (e.g. 36h)", s)
	}
	return d, nil
}

func newPartnersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "partners", Short: "Partners of the partner API: keys, limits, traffic, refusals"}
	cmd.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List partners with today's traffic (UTC)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			res, err := c.ListPartners(cmd.Context(), connect.NewRequest(&partnerv1.ListPartnersRequest{}))
			if err != nil {
				return fmt.Errorf("list partners: %w", err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "NAME", "TIER", "SCOPES", "KEYS", "CALLS TODAY", "QUOTA USED")
			for _, p := range res.Msg.GetPartners() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d/%d\n", p.GetName(), p.GetTier(), strings.Join(p.GetScopes(), ","), p.GetActiveKeys(), p.GetCallsToday(), p.GetQuotaUsedToday(), p.GetDailyQuota())
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "describe PARTNER",
		Short: "Show a partner's limits, keys, traffic today and recent refusals",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			res, err := c.DescribePartner(cmd.Context(), connect.NewRequest(&partnerv1.DescribePartnerRequest{Name: args[0]}))
			if err != nil {
				return fmt.Errorf("describe partner %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			m := res.Msg
			w := cmd.OutOrStdout()
			s, l := m.GetSummary(), m.GetLimits()
			fmt.Fprintf(w, "Partner:  %s (%s)\nTier:     %s\nScopes:   %s\n", s.GetName(), s.GetDisplayName(), s.GetTier(), strings.Join(s.GetScopes(), ", "))
			fmt.Fprintf(w, "Limits:   %g requests/s per node, bursts of %d, %d requests a day (UTC), bodies up to %d bytes, %d items per call\n",
				l.GetRequestsPerSecond(), l.GetBurst(), l.GetDailyQuota(), l.GetMaxBodyBytes(), l.GetMaxItemsPerCall())
			var nodes []string
			for n, v := range m.GetQuotaLeasedByNode() {
				nodes = append(nodes, fmt.Sprintf("%s=%d", n, v))
			}
			sort.Strings(nodes)
			fmt.Fprintf(w, "Quota %s: %d used (reported), %d granted to nodes (%s) of %d\n", m.GetDay(), s.GetQuotaUsedToday(), m.GetQuotaGrantedToday(), strings.Join(nodes, ", "), l.GetDailyQuota())
			fmt.Fprintln(w, "\nKeys:")
			tw := newTable(w, "  ID", "STATE", "CREATED", "EXPIRES", "LAST USED")
			for _, k := range m.GetKeys() {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", k.GetPrefix(), k.GetState(), fmtTime(k.GetCreatedAt()), fmtTime(k.GetExpiresAt()), fmtTime(k.GetLastUsedAt()))
			}
			_ = tw.Flush()
			fmt.Fprintln(w, "\nCalls today (all nodes, as last reported):")
			methods := make([]string, 0, len(m.GetCallsToday()))
			for k := range m.GetCallsToday() {
				methods = append(methods, k)
			}
			sort.Strings(methods)
			tw = newTable(w, "  METHOD", "RESULT", "CALLS")
			for _, k := range methods {
				meth, code, _ := strings.Cut(k, " ")
				fmt.Fprintf(tw, "  %s\t%s\t%d\n", meth, code, m.GetCallsToday()[k])
			}
			_ = tw.Flush()
			fmt.Fprintln(w, "\nRecent refusals (newest last):")
			tw = newTable(w, "  AT", "NODE", "METHOD", "REASON", "KEY", "DETAIL")
			for _, r := range m.GetRecentRefusals() {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(r.GetAt()), r.GetNode(), r.GetMethod(), r.GetReason(), r.GetKeyId(), r.GetDetail())
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(newPartnerKeysCmd())
	return cmd
}

func newPartnerKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "A partner's API keys"}
	var expires, grace string
	create := &cobra.Command{
		Use:   "create PARTNER",
		Short: "Create an API key; it is printed once, the cluster keeps only a hash",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			life, err := parseLifetime(expires)
			if err != nil {
				return fmt.Errorf("--expires %w", err)
			}
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			req := &partnerv1.CreateKeyRequest{Partner: args[0]}
			if life > 0 {
				req.ExpiresIn = durationpb.New(life)
			}
			res, err := c.CreateKey(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("create key for %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetKey())
			cmd.PrintErrf("key %s for partner %s, expires %s; it is shown only now: give it to the partner over a secure channel\n",
				res.Msg.GetInfo().GetId(), args[0], fmtTime(res.Msg.GetInfo().GetExpiresAt()))
			return nil
		},
	}
	create.Flags().StringVar(&expires, "expires", "", "lifetime of the key: days (90d) or a duration (36h); none when empty")
	rotate := &cobra.Command{
		Use:   "rotate PARTNER",
		Short: "Create a new key and let the partner's current keys expire after --grace, in one committed step",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g2, err := parseLifetime(grace)
			if err != nil {
				return fmt.Errorf("--grace %w", err)
			}
			life, err := parseLifetime(expires)
			if err != nil {
				return fmt.Errorf("--expires %w", err)
			}
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			req := &partnerv1.RotateKeyRequest{Partner: args[0], Grace: durationpb.New(g2)}
			if life > 0 {
				req.ExpiresIn = durationpb.New(life)
			}
			res, err := c.RotateKey(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return fmt.Errorf("rotate keys of %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetKey())
			cmd.PrintErrf("new key %s for partner %s; keys %s stop working at %s\n", res.Msg.GetInfo().GetId(), args[0],
				strings.Join(res.Msg.GetExpiringKeys(), ", "), fmtTime(res.Msg.GetOldKeysExpireAt()))
			return nil
		},
	}
	rotate.Flags().StringVar(&grace, "grace", "24h", "how long the current keys stay valid: a duration (24h) or days (2d); 0 ends them now")
	rotate.Flags().StringVar(&expires, "expires", "", "lifetime of the new key: days (90d) or a duration; none when empty")
	ls := &cobra.Command{
		Use:   "ls PARTNER",
		Short: "List a partner's keys (never their secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			res, err := c.ListKeys(cmd.Context(), connect.NewRequest(&partnerv1.ListKeysRequest{Partner: args[0]}))
			if err != nil {
				return fmt.Errorf("list keys of %s: %w", args[0], err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			tw := newTable(cmd.OutOrStdout(), "ID", "PREFIX", "STATE", "CREATED", "EXPIRES", "LAST USED")
			for _, k := range res.Msg.GetKeys() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.GetId(), k.GetPrefix(), k.GetState(), fmtTime(k.GetCreatedAt()), fmtTime(k.GetExpiresAt()), fmtTime(k.GetLastUsedAt()))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke PARTNER KEYID",
		Short: "Revoke a key: every node refuses it once it applies the revocation",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] == "" {
				return errors.New("KEYID: required (see crossdock partners keys ls PARTNER)")
			}
			c, err := partnerAdminClient()
			if err != nil {
				return err
			}
			if _, err := c.RevokeKey(cmd.Context(), connect.NewRequest(&partnerv1.RevokeKeyRequest{Partner: args[0], KeyId: args[1]})); err != nil {
				return fmt.Errorf("revoke key %s of %s: %w", args[1], args[0], err)
			}
			cmd.PrintErrf("revoked key %s of partner %s\n", args[1], args[0])
			return nil
		},
	}
	cmd.AddCommand(create, ls, rotate, revoke)
	return cmd
}
