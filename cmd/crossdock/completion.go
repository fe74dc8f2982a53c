package main

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane/routing"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

// completionTimeout bounds a completion's call to the control plane: a shell waiting on
// Tab must not hang on a dead server.
const completionTimeout = 3 * time.Second

// addCompletions makes Tab complete the names of agents, routes, destinations and
// policies, asking the control plane the CLI is configured for (cobra's `completion`
// command installs the shell side; see docs/operations.md). Without a reachable control
// plane it completes nothing, quietly.
func addCompletions(root *cobra.Command) {
	agentIDs := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return completeAgents(cmd.Context())
	}
	docNames := func(kind routing.Kind) cobra.CompletionFunc {
		return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeDocuments(cmd.Context(), kind)
		}
	}
	// KIND NAME commands: the kind, then a document of that kind.
	kindThenName := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return []string{"route", "destination", "policy"}, cobra.ShellCompDirectiveNoFileComp
		case 1:
			if k, ok := routing.ParseKind(args[0]); ok {
				return completeDocuments(cmd.Context(), k)
			}
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	for path, f := range map[string]cobra.CompletionFunc{
		"agents describe": agentIDs,
		"agents revoke":   agentIDs,
		"routes test":     docNames(routing.KindRoute),
		"history":         kindThenName,
		"rollback":        kindThenName,
		"delete":          kindThenName,
	} {
		if c, _, err := root.Find(strings.Fields(path)); err == nil && c.Name() == strings.Fields(path)[len(strings.Fields(path))-1] && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = f
		}
	}
	flags := map[string]map[string]routing.Kind{
		"replay":         {"route": routing.KindRoute, "destination": routing.KindDestination},
		"archive replay": {"route": routing.KindRoute, "destination": routing.KindDestination},
		"dlq ls":         {"destination": routing.KindDestination},
		"dlq retry":      {"destination": routing.KindDestination},
	}
	for path, fl := range flags {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil {
			continue
		}
		for name, kind := range fl {
			if c.Flags().Lookup(name) == nil {
				continue
			}
			kind := kind
			_ = c.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
				return completeDocuments(cmd.Context(), kind)
			})
		}
	}
}

func completeAgents(ctx context.Context) ([]string, cobra.ShellCompDirective) {
	c, err := adminClient()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(ctxOrBackground(ctx), completionTimeout)
	defer cancel()
	res, err := c.ListAgents(ctx, connect.NewRequest(&adminv1.ListAgentsRequest{}))
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	for _, a := range res.Msg.GetAgents() {
		ids = append(ids, a.GetId())
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

func completeDocuments(ctx context.Context, kind routing.Kind) ([]string, cobra.ShellCompDirective) {
	c, err := routingClient()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(ctxOrBackground(ctx), completionTimeout)
	defer cancel()
	res, err := c.ListDocuments(ctx, connect.NewRequest(&routingv1.ListDocumentsRequest{Kind: string(kind)}))
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, d := range res.Msg.GetDocuments() {
		names = append(names, d.GetName())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func ctxOrBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}
