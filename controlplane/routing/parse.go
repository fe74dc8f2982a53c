package routing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/edi"
)

// Limits on input, so a document cannot make the control plane work unboundedly.
const (
	// MaxFileBytes is the largest YAML stream Parse accepts.
	MaxFileBytes = 4 << 20
	// MaxDocuments is the most documents one Parse (one apply) accepts.
	MaxDocuments = 1000
)

// FieldError is one problem in one document. Doc is "routes/NAME" (or "document N" when
// the document has no valid name yet), Path the field ("spec.match.types[1]").
type FieldError struct {
	Doc  string
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	switch {
	case e.Doc == "" && e.Path == "":
		return e.Msg
	case e.Path == "":
		return e.Doc + ": " + e.Msg
	case e.Doc == "":
		return e.Path + ": " + e.Msg
	}
	return e.Doc + ": " + e.Path + ": " + e.Msg
}

// ValidationError lists every problem found; its message has one line per problem. It
// wraps ErrInvalid.
type ValidationError struct {
	Errors []*FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

type problems struct {
	doc  string
	errs []*FieldError
}

func (p *problems) add(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Doc: p.doc, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Parse reads a YAML stream of documents separated by "---" and validates each one,
// compiling its CEL expressions. On any problem it returns a *ValidationError listing
// all of them, each with the document and the path of the bad field. Webhook secrets may
// still be ${env:NAME} or ${file:PATH} references (see ResolveSecrets).
func Parse(b []byte) ([]*Document, error) {
	if len(b) > MaxFileBytes {
		return nil, &ValidationError{Errors: []*FieldError{{Msg: fmt.Sprintf("input is %d bytes, more than %d", len(b), MaxFileBytes)}}}
	}
	parts, lines := splitDocuments(b)
	var (
		docs []*Document
		all  []*FieldError
		seen = map[string]int{}
	)
	n := 0
	for i, part := range parts {
		if blank(part) {
			continue
		}
		n++
		if n > MaxDocuments {
			all = append(all, &FieldError{Msg: fmt.Sprintf("more than %d documents", MaxDocuments)})
			break
		}
		d, errs := parseOne(part, n, lines[i])
		all = append(all, errs...)
		if d == nil {
			continue
		}
		if prev, dup := seen[d.Ref()]; dup {
			all = append(all, &FieldError{Doc: d.Ref(), Msg: fmt.Sprintf("defined twice (documents %d and %d)", prev, n)})
			continue
		}
		seen[d.Ref()] = n
		if len(errs) == 0 {
			docs = append(docs, d)
		}
	}
	if len(all) > 0 {
		return nil, &ValidationError{Errors: all}
	}
	if len(docs) == 0 {
		return nil, &ValidationError{Errors: []*FieldError{{Msg: "no documents found"}}}
	}
	return docs, nil
}

// ParseOne parses a stream that must hold exactly one document.
func ParseOne(b []byte) (*Document, error) {
	docs, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, &ValidationError{Errors: []*FieldError{{Msg: fmt.Sprintf("want one document, found %d", len(docs))}}}
	}
	return docs[0], nil
}

func parseOne(part []byte, n, line int) (*Document, []*FieldError) {
	p := &problems{doc: fmt.Sprintf("document %d (line %d)", n, line)}
	j, err := yaml.YAMLToJSONStrict(part)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		p.add("", "not valid YAML: %s", yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
			n, _ := strconv.Atoi(yamlLineRE.FindStringSubmatch(m)[1])
			return fmt.Sprintf("line %d", n+line-1) // lines of the file, not of the document
		}))
		return nil, p.errs
	}
	var top any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		p.add("", "not valid YAML: %v", err)
		return nil, p.errs
	}
	obj, ok := top.(map[string]any)
	if !ok {
		p.add("", "a document must be a mapping with apiVersion, kind, metadata and spec")
		return nil, p.errs
	}
	d := &Document{}
	for k := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		default:
			p.add(k, "unknown field (a document has apiVersion, kind, metadata and spec)")
		}
	}
	d.APIVersion, _ = obj["apiVersion"].(string)
	if d.APIVersion != APIVersion {
		p.add("apiVersion", "must be %q, got %s", APIVersion, show(obj["apiVersion"]))
	}
	ks, _ := obj["kind"].(string)
	switch Kind(ks) {
	case KindDestination, KindRoute, KindPolicy, KindRetention, KindPartner, KindTier, KindAlert, KindTradingPartner, KindAgentConfig:
		d.Kind = Kind(ks)
	default:
		p.add("kind", "must be Destination, Route, Policy, Retention, Tier, Partner, Alert, TradingPartner or AgentConfig, got %s", show(obj["kind"]))
	}
	if md, ok := obj["metadata"].(map[string]any); !ok {
		p.add("metadata.name", "required")
	} else {
		for k := range md {
			if k != "name" {
				p.add("metadata."+k, "unknown field (metadata has only name)")
			}
		}
		name, _ := md["name"].(string)
		switch {
		case md["name"] == nil:
			p.add("metadata.name", "required")
		case !canonical.ValidName(name):
			p.add("metadata.name", "%s must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", show(md["name"]))
		default:
			d.Metadata.Name = name
		}
	}
	if d.Kind == "" || d.Metadata.Name == "" {
		return nil, p.errs
	}
	p.doc = d.Ref()
	for _, fe := range p.errs {
		fe.Doc = p.doc
	}
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		p.add("spec", "required (a mapping)")
		return d, p.errs
	}
	switch d.Kind {
	case KindDestination:
		d.Destination = &DestinationSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Destination).Elem())
		if len(p.errs) == 0 {
			validateDestination(p, d.Destination)
		}
	case KindRoute:
		d.Route = &RouteSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Route).Elem())
		if len(p.errs) == 0 {
			validateRoute(p, d)
		}
	case KindPolicy:
		d.Policy = &PolicySpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Policy).Elem())
		if len(p.errs) == 0 {
			validatePolicy(p, d.Policy)
		}
	case KindRetention:
		d.Retention = &RetentionSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Retention).Elem())
		if len(p.errs) == 0 {
			validateRetention(p, d)
		}
	case KindPartner:
		d.Partner = &PartnerSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Partner).Elem())
		if len(p.errs) == 0 {
			validatePartner(p, d.Partner)
		}
	case KindTier:
		d.Tier = &TierSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Tier).Elem())
		if len(p.errs) == 0 {
			validateTier(p, "spec", d.Tier)
		}
	case KindAlert:
		d.Alert = &AlertSpec{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.Alert).Elem())
		if len(p.errs) == 0 {
			validateAlert(p, d.Alert)
		}
	case KindTradingPartner:
		d.TradingPartner = &edi.Profile{}
		decodeInto(p, "spec", spec, reflect.ValueOf(d.TradingPartner).Elem())
		if len(p.errs) == 0 {
			validateTradingPartner(p, d.TradingPartner)
		}
	case KindAgentConfig:
		d.AgentConfig = parseAgentConfig(p, spec)
	}
	return d, p.errs
}

func show(v any) string {
	if v == nil {
		return "nothing"
	}
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

var durationType = reflect.TypeFor[Duration]()

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// decodeInto stores the generic JSON value v in rv, reporting unknown fields and type
// mismatches with their path. It handles the types the spec structs use.
func decodeInto(p *problems, path string, v any, rv reflect.Value) {
	if v == nil {
		return // null = absent
	}
	t := rv.Type()
	if t == durationType {
		b, _ := json.Marshal(v)
		var d Duration
		if err := d.UnmarshalJSON(b); err != nil {
			p.add(path, "%s", err.Error())
			return
		}
		rv.Set(reflect.ValueOf(d))
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		nv := reflect.New(t.Elem())
		decodeInto(p, path, v, nv.Elem())
		rv.Set(nv)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, "want a mapping, got %s", show(v))
			return
		}
		fields := map[string]int{}
		var names []string
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if tag != "" && tag != "-" {
				fields[tag] = i
				names = append(names, tag)
			}
		}
		for _, k := range sortedKeys(m) {
			i, ok := fields[k]
			if !ok {
				p.add(join(path, k), "unknown field (known: %s)", strings.Join(names, ", "))
				continue
			}
			decodeInto(p, join(path, k), m[k], rv.Field(i))
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			p.add(path, "want a mapping, got %s", show(v))
			return
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range sortedKeys(m) {
			ev := reflect.New(t.Elem()).Elem()
			decodeInto(p, join(path, k), m[k], ev)
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		rv.Set(out)
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			p.add(path, "want a list, got %s", show(v))
			return
		}
		out := reflect.MakeSlice(t, len(l), len(l))
		for i, e := range l {
			decodeInto(p, fmt.Sprintf("%s[%d]", path, i), e, out.Index(i))
		}
		rv.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			p.add(path, "want a string, got %s", show(v))
			return
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			p.add(path, "want true or false, got %s", show(v))
			return
		}
		rv.SetBool(b)
	case reflect.Int:
		num, ok := v.(json.Number)
		i, err := num.Int64()
		if !ok || err != nil || i > math.MaxInt32 || i < math.MinInt32 {
			p.add(path, "want a whole number, got %s", show(v))
			return
		}
		rv.SetInt(i)
	case reflect.Float64:
		num, ok := v.(json.Number)
		f, err := num.Float64()
		if !ok || err != nil {
			p.add(path, "want a number, got %s", show(v))
			return
		}
		rv.SetFloat(f)
	default:
		panic(fmt.Sprintf("routing: decodeInto: unsupported type %s", t)) // impossible: spec types are fixed
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
