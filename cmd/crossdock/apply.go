package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/crossdock/crossdock/controlplane/routing"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

func routingClient() (routingv1connect.RoutingServiceClient, error) {
	c, err := resolveConfig()
	if err != nil {
		return nil, err
	}
	hc, addr, _, err := c.HTTPClient()
	if err != nil {
		return nil, err
	}
	return routingv1connect.NewRoutingServiceClient(hc, addr), nil
}

// rpcError turns a refused call into a readable error: validation problems one per line.
func rpcError(what string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeInvalidArgument {
		return fmt.Errorf("%s refused:\n  %s", what, strings.ReplaceAll(ce.Message(), "\n", "\n  "))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// readDocumentFiles reads -f arguments: files, directories (their *.yaml and *.yml, not
// recursive, in name order) or "-" for standard input. It parses each file, resolves
// ${env:...} and ${file:...} secrets (file paths relative to the document's file) and
// returns one canonical YAML stream.
func readDocumentFiles(paths []string, stdin io.Reader) (string, int, error) {
	var files []string
	for _, p := range paths {
		if p == "-" {
			files = append(files, p)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", 0, fmt.Errorf("-f %s: %w", p, err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return "", 0, fmt.Errorf("-f %s: %w", p, err)
		}
		var found []string
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
				found = append(found, filepath.Join(p, e.Name()))
			}
		}
		if len(found) == 0 {
			return "", 0, fmt.Errorf("-f %s: no .yaml or .yml files in the directory", p)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	var (
		out  bytes.Buffer
		n    int
		errs []string
	)
	for _, f := range files {
		var (
			b   []byte
			err error
			dir = "."
		)
		if f == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, routing.MaxFileBytes+1))
		} else {
			b, err = os.ReadFile(f)
			dir = filepath.Dir(f)
		}
		if err != nil {
			return "", 0, fmt.Errorf("read %s: %w", f, err)
		}
		docs, err := routing.Parse(b)
		if err == nil {
			err = routing.ResolveSecrets(docs, os.LookupEnv, func(p string) ([]byte, error) {
				if !filepath.IsAbs(p) {
					p = filepath.Join(dir, p)
				}
				return os.ReadFile(p)
			})
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s:\n  %s", f, strings.ReplaceAll(err.Error(), "\n", "\n  ")))
			continue
		}
		for _, d := range docs {
			c, err := d.Canonical()
			if err != nil {
				return "", 0, err
			}
			out.WriteString("---\n")
			out.Write(c)
			n++
		}
	}
	if len(errs) > 0 {
		return "", 0, errors.New("invalid documents:\n" + strings.Join(errs, "\n"))
	}
	return out.String(), n, nil
}

func newApplyCmd() *cobra.Command {
	var (
		files    []string
		dryRun   bool
		exitCode bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [--dry-run]",
		Short: "Create or update destinations, routes and policies from YAML documents",
		Long: `Apply reads routing documents (apiVersion crossdock.io/v1; kind Destination, Route or
Policy) from files or directories and creates or updates them, all or none, showing
the diff of each. Identical documents are left unchanged. Webhook secrets written as
${env:NAME} or ${file:PATH} are resolved here, on your machine; they are stored in the
cluster and shown masked. See docs/routing.md.`,
		Example: `  crossdock apply -f routing/ --dry-run
  crossdock apply -f routing/ --dry-run --exit-code   # exit 1 when the cluster differs (CI)
  crossdock apply -f marketplace.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			defer func() {
				// As kubectl diff: with --exit-code an error is 2, a difference 1.
				var ee *exitError
				if exitCode && err != nil && !errors.As(err, &ee) {
					err = &exitError{code: 2, msg: err.Error()}
				}
			}()
			if len(files) == 0 {
				return errors.New("-f FILE|DIR is required (use -f - for standard input)")
			}
			if exitCode && !dryRun {
				return errors.New("--exit-code goes with --dry-run (it reports whether applying would change anything)")
			}
			stream, _, err := readDocumentFiles(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := routingClient()
			if err != nil {
				return err
			}
			res, err := c.ApplyDocuments(cmd.Context(), connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: stream, DryRun: dryRun}))
			if err != nil {
				return rpcError("apply", err)
			}
			if g.output != "table" {
				if err := printMessage(cmd.OutOrStdout(), res.Msg); err != nil {
					return err
				}
			} else {
				for _, d := range res.Msg.GetDocuments() {
					printApplied(cmd.OutOrStdout(), d, dryRun)
				}
			}
			if exitCode && wouldChange(res.Msg.GetDocuments()) {
				return &exitError{code: 1} // as kubectl diff: 1 means there is a difference
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or directory of YAML documents, or - for stdin (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show the diff without changing anything")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "with --dry-run: exit 1 when applying would change something, 0 when not, 2 on an error (as kubectl diff)")
	return cmd
}

// wouldChange reports whether any document is created, updated or deleted.
func wouldChange(docs []*routingv1.AppliedDocument) bool {
	for _, d := range docs {
		switch d.GetAction() {
		case routingv1.Action_ACTION_CREATED, routingv1.Action_ACTION_UPDATED, routingv1.Action_ACTION_DELETED:
			return true
		}
	}
	return false
}

// printApplied writes "routes/NAME: updated (version 1 -> 2)" and the diff, indented.
// It also prints deletions and rollbacks.
func printApplied(w io.Writer, d *routingv1.AppliedDocument, dryRun bool) {
	k, _ := routing.ParseKind(d.GetKind())
	what := ""
	switch d.GetAction() {
	case routingv1.Action_ACTION_CREATED:
		what = fmt.Sprintf("created (version %d)", d.GetVersion())
	case routingv1.Action_ACTION_UPDATED:
		what = fmt.Sprintf("updated (version %d -> %d)", d.GetPreviousVersion(), d.GetVersion())
	case routingv1.Action_ACTION_DELETED:
		what = fmt.Sprintf("deleted (version %d; history kept)", d.GetPreviousVersion())
	default:
		what = fmt.Sprintf("unchanged (version %d)", d.GetVersion())
	}
	if dryRun {
		what += " (dry run)"
	}
	fmt.Fprintf(w, "%s/%s: %s\n", k.Plural(), d.GetName(), what)
	if diff := d.GetDiff(); diff != "" {
		for _, l := range strings.Split(strings.TrimSuffix(diff, "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}
