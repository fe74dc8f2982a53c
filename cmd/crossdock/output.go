package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// printMessage writes msg as protojson or YAML; table output is the caller's.
func printMessage(w io.Writer, msg proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: g.output == "json", Indent: "  "}.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	switch g.output {
	case "json":
		_, err = fmt.Fprintln(w, string(b))
	case "yaml":
		y, yerr := yaml.JSONToYAML(b)
		if yerr != nil {
			return fmt.Errorf("encode output: %w", yerr)
		}
		_, err = w.Write(y)
	default:
		return fmt.Errorf("-o %s: want table, json or yaml", g.output)
	}
	return err
}

// printLine writes one streamed message as a single JSON line (for tail).
func printLine(w io.Writer, msg proto.Message) error {
	b, err := protojson.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func fmtKeys(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// parseKeys turns ["sku=A-100", "location=WH1"] into a map.
func parseKeys(kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("--key %q: want name=value, e.g. sku=A-100", kv)
		}
		m[k] = v
	}
	return m, nil
}
