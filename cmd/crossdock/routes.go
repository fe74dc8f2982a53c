package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane/routing"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
)

func newRoutesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "routes", Short: "List and test routes (apply them with crossdock apply)"}
	// "routes apply" is the design's noun-verb spelling of the top-level apply.
	cmd.AddCommand(newDocumentsLsCmd(routing.KindRoute), newRoutesTestCmd(), newApplyCmd())
	return cmd
}

func newDestinationsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "destinations", Aliases: []string{"destination"}, Short: "List destinations (apply them with crossdock apply)"}
	cmd.AddCommand(newDocumentsLsCmd(routing.KindDestination))
	return cmd
}

func newPoliciesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policies", Aliases: []string{"policy"}, Short: "List delivery policies (apply them with crossdock apply)"}
	cmd.AddCommand(newDocumentsLsCmd(routing.KindPolicy))
	return cmd
}

func newDocumentsLsCmd(kind routing.Kind) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   fmt.Sprintf("List %s with their current version", kind.Plural()),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.ListDocuments(cmd.Context(), connect.NewRequest(&routingv1.ListDocumentsRequest{Kind: string(kind)}))
			if err != nil {
				return rpcError("list "+kind.Plural(), err)
			}
			if g.output != "table" {
				return printMessage(cmd.OutOrStdout(), res.Msg)
			}
			head := map[routing.Kind]string{routing.KindRoute: "MATCH -> DESTINATIONS", routing.KindDestination: "TARGET", routing.KindPolicy: "SETTINGS"}[kind]
			tw := newTable(cmd.OutOrStdout(), "NAME", "VERSION", "UPDATED", head)
			for _, d := range res.Msg.GetDocuments() {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", d.GetName(), d.GetVersion(), fmtTime(d.GetAppliedAt()), d.GetSummary())
			}
			return tw.Flush()
		},
	}
}

func newRoutesTestCmd() *cobra.Command {
	var eventFile, routeFile string
	cmd := &cobra.Command{
		Use:   "test NAME --event FILE",
		Short: "Show what a route does with an event, without delivering anything",
		Long: `Test evaluates a route on one event and prints whether it matches and the payload its
mapping produces, or the filter's or mapping's error exactly as a dead letter would
record it. Nothing is delivered.

The event file holds one event as JSON (the protojson form of crossdock.event.v1.Event,
as for crossdock publish, or a CommittedEvent with seq and committed_at). With -f, the
route is read from a local file instead of the cluster, to try a mapping before it is
applied.`,
		Example: `  crossdock routes test marketplace-inventory --event level.json
  crossdock routes test marketplace-inventory --event level.json -f routes/marketplace.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if eventFile == "" {
				return errors.New("--event FILE is required")
			}
			ev, err := os.ReadFile(eventFile)
			if err != nil {
				return fmt.Errorf("--event: %w", err)
			}
			evJSON, err := eventForTest(eventFile, ev)
			if err != nil {
				return err
			}
			req := &routingv1.TestRouteRequest{Route: args[0], EventJson: evJSON}
			if routeFile != "" {
				yaml, err := routeFromFile(routeFile, args[0])
				if err != nil {
					return err
				}
				req.RouteYaml = yaml
			}
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.TestRoute(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return rpcError("test route", err)
			}
			if g.output != "table" {
				if err := printMessage(cmd.OutOrStdout(), res.Msg); err != nil {
					return err
				}
			} else {
				printTestResult(cmd.OutOrStdout(), res.Msg)
			}
			if res.Msg.GetError() != "" {
				return fmt.Errorf("the route's %s failed: such an event would be dead-lettered", res.Msg.GetStage())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&eventFile, "event", "", "JSON file holding the event")
	cmd.Flags().StringVarP(&routeFile, "filename", "f", "", "test the route NAME from this YAML file instead of the applied one")
	return cmd
}

// eventForTest is the event JSON to test a route with. It takes an event as written
// (publish's form, or a CommittedEvent) unchanged; from the answer of `events ls -o json`
// ({"events": [...], "lastSeq": ...}) it takes the one event, and says what to do when
// that answer holds none or several.
func eventForTest(file string, b []byte) (string, error) {
	const pick = "crossdock events ls --type TYPE --limit 1 -o json > FILE"
	if len(bytes.TrimSpace(b)) == 0 {
		return "", fmt.Errorf("--event %s is empty: it must hold one event as JSON: write one as for crossdock publish, or save one that exists (%s)", file, pick)
	}
	var list struct {
		Events  []json.RawMessage `json:"events"`
		LastSeq json.RawMessage   `json:"lastSeq"`
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) == nil && len(obj) == 0 {
		// {} is what events ls -o json prints for an empty ledger.
		return "", fmt.Errorf("--event %s holds {}, no event (events ls -o json prints that when the ledger is empty): save one event that exists (%s), or write one as for crossdock publish", file, pick)
	}
	if json.Unmarshal(b, &list) != nil || (list.Events == nil && list.LastSeq == nil) {
		return string(b), nil // an event, or not JSON: the control plane says what is wrong
	}
	switch len(list.Events) {
	case 0:
		return "", fmt.Errorf("--event %s holds an events ls answer with no event in it (nothing matched that listing): save one event that exists (%s), or write one as for crossdock publish", file, pick)
	case 1:
		return string(list.Events[0]), nil
	default:
		return "", fmt.Errorf("--event %s holds %d events from events ls; routes test takes one: save one (%s)", file, len(list.Events), pick)
	}
}

// routeFromFile finds the Route named name in a YAML file and returns it canonical.
func routeFromFile(path, name string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-f: %w", err)
	}
	docs, err := routing.Parse(b)
	if err != nil {
		return "", fmt.Errorf("%s:\n  %s", path, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	for _, d := range docs {
		if d.Kind == routing.KindRoute && d.Name() == name {
			c, err := d.Canonical()
			return string(c), err
		}
	}
	return "", fmt.Errorf("%s has no Route named %q", path, name)
}

func printTestResult(w io.Writer, r *routingv1.TestRouteResponse) {
	version := "from file"
	if r.GetRouteVersion() > 0 {
		version = fmt.Sprintf("version %d", r.GetRouteVersion())
	}
	fmt.Fprintf(w, "route:        %s\n", version)
	fmt.Fprintf(w, "destinations: %s\n", strings.Join(r.GetDestinations(), ", "))
	switch {
	case r.GetError() != "":
		fmt.Fprintf(w, "matched:      yes\nerror:        %s\n", r.GetError())
	case !r.GetMatched():
		fmt.Fprintln(w, "matched:      no (the event's type, keys or the filter do not select it; nothing would be sent)")
	default:
		fmt.Fprintln(w, "matched:      yes\npayload:")
		var buf bytes.Buffer
		if json.Indent(&buf, []byte(r.GetPayloadJson()), "  ", "  ") == nil {
			fmt.Fprintf(w, "  %s\n", buf.String())
		} else {
			fmt.Fprintf(w, "  %s\n", r.GetPayloadJson())
		}
	}
}
