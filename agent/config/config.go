// Package config reads the agent's configuration file (`crossdock agent --config FILE`):
// the agent's own settings and the connectors it runs.
//
//	agent:
//	  name: store-12
//	  data_dir: /var/lib/crossdock-agent
//	  servers: [cp1.example.com:7443, cp2.example.com:7443]
//	  quota: 2GiB
//	connectors:
//	  - name: erp
//	    builtin: sql
//	    settings:
//	      dsn: postgres://crossdock:${env:ERP_PASSWORD}@db/erp
//	  - name: wms
//	    path: /opt/crossdock/plugins/wms
//	    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	    settings:
//	      api_key: ${file:/etc/crossdock/wms.key}
//
// Secrets are references the agent resolves when it starts, from its own environment
// (${env:NAME}) or files (${file:/path}, trailing newlines trimmed); "$${" writes a
// literal "${". They are never sent to or taken from the control plane. Every error
// names the field's path and the reason, e.g. "connectors[1].settings.dsn: environment
// variable ERP_PASSWORD is not set".
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/crossdock/crossdock/internal/canonical"
)

// MaxFileBytes bounds the config file.
const MaxFileBytes = 4 << 20

// File is a parsed, validated configuration with secrets resolved.
type File struct {
	Agent      Agent
	Connectors []Connector
}

// Agent holds the agent's settings; zero values mean "not set" (flags or defaults apply).
type Agent struct {
	Name        string
	DataDir     string
	Servers     []string
	EnrollToken string
	LocalAddr   string
	NoQUIC      *bool
	QuotaBytes  int64 // from "quota", e.g. 1GiB; 0 when unset
	MemoryLimit string
	Batch       int
	Window      int
}

// Connector is one connector entry.
type Connector struct {
	Name string
	// Builtin is a built-in connector type; Path and SHA256 an external plugin binary.
	Builtin, Path, SHA256 string
	// Source false turns off capture for a plugin that is both source and sink.
	Source *bool
	// Settings is the settings object as JSON, secrets resolved.
	Settings []byte
}

// Env resolves references; tests replace it.
type Env struct {
	LookupEnv func(string) (string, bool)
	ReadFile  func(string) ([]byte, error)
}

// OSEnv reads the process environment and the file system.
var OSEnv = Env{LookupEnv: os.LookupEnv, ReadFile: os.ReadFile}

// Error is a configuration error at a field path.
type Error struct {
	Path   string
	Reason string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

func errf(path, format string, args ...any) error {
	return &Error{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// Load reads and parses a config file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	f, err := Parse(b, OSEnv)
	if err != nil {
		return nil, fmt.Errorf("agent config %s: %w", path, err)
	}
	return f, nil
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	refRE    = regexp.MustCompile(`\$\$\{|\$\{([a-z]+):([^}]*)\}`)
)

// Parse parses a config document (YAML or JSON), validates it and resolves references.
func Parse(data []byte, env Env) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, errf("", "the file has %d bytes, more than %d", len(data), MaxFileBytes)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, errf("", "not valid YAML: %v", err)
	}
	var root any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		return nil, errf("", "not valid YAML: %v", err)
	}
	if root == nil {
		return nil, errf("", "the file is empty")
	}
	top, ok := root.(map[string]any)
	if !ok {
		return nil, errf("", "want a mapping with agent and connectors, got %s", kind(root))
	}
	f := &File{}
	if err := only(top, "", "agent", "connectors"); err != nil {
		return nil, err
	}
	if a, ok := top["agent"]; ok && a != nil {
		m, ok := a.(map[string]any)
		if !ok {
			return nil, errf("agent", "want a mapping, got %s", kind(a))
		}
		if err := parseAgent(m, env, &f.Agent); err != nil {
			return nil, err
		}
	}
	if cs, ok := top["connectors"]; ok && cs != nil {
		list, ok := cs.([]any)
		if !ok {
			return nil, errf("connectors", "want a list, got %s", kind(cs))
		}
		seen := map[string]int{}
		for i, c := range list {
			path := fmt.Sprintf("connectors[%d]", i)
			m, ok := c.(map[string]any)
			if !ok {
				return nil, errf(path, "want a mapping, got %s", kind(c))
			}
			cn, err := parseConnector(path, m, env)
			if err != nil {
				return nil, err
			}
			if j, dup := seen[cn.Name]; dup {
				return nil, errf(path+".name", "%q is already the name of connectors[%d]", cn.Name, j)
			}
			seen[cn.Name] = i
			f.Connectors = append(f.Connectors, cn)
		}
	}
	return f, nil
}

func parseAgent(m map[string]any, env Env, a *Agent) error {
	if err := only(m, "agent", "name", "data_dir", "servers", "enroll_token", "local_addr", "no_quic", "quota", "memory_limit", "batch", "window"); err != nil {
		return err
	}
	var err error
	str := func(key string, dst *string, secret bool) {
		if err != nil {
			return
		}
		*dst, err = stringField(m, "agent."+key, key)
		if err == nil && secret {
			*dst, err = resolve("agent."+key, *dst, env)
		}
	}
	str("name", &a.Name, false)
	str("data_dir", &a.DataDir, false)
	str("enroll_token", &a.EnrollToken, true)
	str("local_addr", &a.LocalAddr, false)
	str("memory_limit", &a.MemoryLimit, false)
	var quota string
	str("quota", &quota, false)
	if err != nil {
		return err
	}
	if a.Name != "" && !canonical.ValidName(a.Name) {
		return errf("agent.name", "%q must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", a.Name)
	}
	if quota != "" {
		if a.QuotaBytes, err = ParseBytes(quota); err != nil || a.QuotaBytes == 0 {
			return errf("agent.quota", "%q is not a size like 1GiB or 500MiB", quota)
		}
	}
	if a.MemoryLimit != "" {
		if _, err := ParseBytes(a.MemoryLimit); err != nil {
			return errf("agent.memory_limit", "%q is not a size like 40MiB (0 disables)", a.MemoryLimit)
		}
	}
	if v, ok := m["servers"]; ok && v != nil {
		list, ok := v.([]any)
		if !ok {
			return errf("agent.servers", "want a list of host:port, got %s", kind(v))
		}
		for i, s := range list {
			str, ok := s.(string)
			if !ok || str == "" || !strings.Contains(str, ":") {
				return errf(fmt.Sprintf("agent.servers[%d]", i), "want host:port, got %s", show(s))
			}
			a.Servers = append(a.Servers, str)
		}
	}
	if v, ok := m["no_quic"]; ok && v != nil {
		b, ok := v.(bool)
		if !ok {
			return errf("agent.no_quic", "want true or false, got %s", show(v))
		}
		a.NoQUIC = &b
	}
	for _, f := range []struct {
		key      string
		dst      *int
		min, max int
	}{{"batch", &a.Batch, 1, 10000}, {"window", &a.Window, 1, 1024}} {
		v, ok := m[f.key]
		if !ok || v == nil {
			continue
		}
		n, isNum := v.(json.Number)
		i, perr := strconv.Atoi(string(n))
		if !isNum || perr != nil || i < f.min || i > f.max {
			return errf("agent."+f.key, "want a whole number from %d to %d, got %s", f.min, f.max, show(v))
		}
		*f.dst = i
	}
	return nil
}

func parseConnector(path string, m map[string]any, env Env) (Connector, error) {
	var c Connector
	if err := only(m, path, "name", "builtin", "path", "sha256", "source", "settings"); err != nil {
		return c, err
	}
	var err error
	for _, f := range []struct {
		key string
		dst *string
	}{{"name", &c.Name}, {"builtin", &c.Builtin}, {"path", &c.Path}, {"sha256", &c.SHA256}} {
		if *f.dst, err = stringField(m, path+"."+f.key, f.key); err != nil {
			return c, err
		}
	}
	switch {
	case c.Name == "":
		return c, errf(path+".name", "required")
	case !nameRE.MatchString(c.Name):
		return c, errf(path+".name", "%q must be 1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit", c.Name)
	case c.Builtin == "" && c.Path == "":
		return c, errf(path, "set builtin (a connector type such as sql) or path (a plugin binary, with sha256)")
	case c.Builtin != "" && c.Path != "":
		return c, errf(path, "set builtin or path, not both")
	case c.Builtin != "" && c.SHA256 != "":
		return c, errf(path+".sha256", "only for a plugin binary given by path")
	case c.Builtin != "" && !nameRE.MatchString(c.Builtin):
		return c, errf(path+".builtin", "%q is not a connector type", c.Builtin)
	case c.Path != "" && !strings.HasPrefix(c.Path, "/"):
		return c, errf(path+".path", "%q must be an absolute path", c.Path)
	case c.Path != "" && c.SHA256 == "":
		return c, errf(path+".sha256", "required with path: the SHA-256 of the plugin binary (sha256sum %s)", c.Path)
	case c.Path != "" && !sha256RE.MatchString(c.SHA256):
		return c, errf(path+".sha256", "%q is not 64 hex digits", c.SHA256)
	}
	if v, ok := m["source"]; ok && v != nil {
		b, ok := v.(bool)
		if !ok {
			return c, errf(path+".source", "want true or false, got %s", show(v))
		}
		c.Source = &b
	}
	settings := map[string]any{}
	if v, ok := m["settings"]; ok && v != nil {
		s, ok := v.(map[string]any)
		if !ok {
			return c, errf(path+".settings", "want a mapping, got %s", kind(v))
		}
		r, err := resolveTree(path+".settings", s, env)
		if err != nil {
			return c, err
		}
		settings = r.(map[string]any)
	}
	if c.Settings, err = json.Marshal(settings); err != nil {
		return c, errf(path+".settings", "%v", err)
	}
	return c, nil
}

// only refuses keys not in allowed.
func only(m map[string]any, path string, allowed ...string) error {
	var bad []string
	for k := range m {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	p := bad[0]
	if path != "" {
		p = path + "." + bad[0]
	}
	return errf(p, "unknown field (known: %s)", strings.Join(allowed, ", "))
}

func stringField(m map[string]any, path, key string) (string, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", errf(path, "want a string, got %s", show(v))
	}
	return s, nil
}

// resolveTree resolves references in every string of a settings tree.
func resolveTree(path string, v any, env Env) (any, error) {
	switch t := v.(type) {
	case string:
		return resolve(path, t, env)
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			r, err := resolveTree(path+"."+k, e, env)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			r, err := resolveTree(fmt.Sprintf("%s[%d]", path, i), e, env)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// resolve replaces ${env:NAME} and ${file:/path} in s.
func resolve(path, s string, env Env) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var firstErr error
	out := refRE.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$${" {
			return "${"
		}
		sub := refRE.FindStringSubmatch(ref)
		scheme, arg := sub[1], sub[2]
		var err error
		var val string
		switch scheme {
		case "env":
			v, ok := env.LookupEnv(arg)
			switch {
			case arg == "":
				err = errors.New("${env:} needs a variable name")
			case !ok:
				err = fmt.Errorf("environment variable %s is not set", arg)
			}
			val = v
		case "file":
			if !strings.HasPrefix(arg, "/") {
				err = fmt.Errorf("${file:%s}: the path must be absolute", arg)
				break
			}
			b, rerr := env.ReadFile(arg)
			if rerr != nil {
				err = fmt.Errorf("read secret file: %w", rerr)
			}
			val = strings.TrimRight(string(b), "\r\n")
		default:
			err = fmt.Errorf("unknown reference ${%s:...}: use ${env:NAME} or ${file:/path} (write $${ for a literal ${)", scheme)
		}
		if err != nil && firstErr == nil {
			firstErr = errf(path, "%s", err.Error())
		}
		return val
	})
	if firstErr != nil {
		return "", firstErr
	}
	if strings.Contains(refRE.ReplaceAllString(s, ""), "${") {
		return "", errf(path, "unterminated reference: use ${env:NAME} or ${file:/path} (write $${ for a literal ${)")
	}
	return out, nil
}

// ParseBytes reads sizes like 1GiB, 500MiB, 64KiB or a plain byte count.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size like 1GiB or 500MiB", s)
	}
	return v * mult, nil
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	if n, ok := v.(json.Number); ok {
		return string(n)
	}
	return kind(v)
}
