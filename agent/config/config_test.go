package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testEnv(vars map[string]string) Env {
	return Env{
		LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		ReadFile:  os.ReadFile,
	}
}

func TestParseFullFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "wms.key")
	if err := os.WriteFile(keyFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
agent:
  name: store-12
  data_dir: /var/lib/crossdock-agent
  servers: [cp1:7443, "cp2:7443"]
  enroll_token: ${env:TOKEN}
  quota: 2GiB
  no_quic: true
  batch: 250
connectors:
  - name: erp
    builtin: sql
    settings:
      dsn: postgres://u:${env:ERP_PW}@db/erp
      tables: [{name: stock, key: [sku, "$${literal}"]}]
      poll: 5
  - name: wms
    path: /opt/plugins/wms
    sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
    source: false
    settings:
      api_key: ${file:` + keyFile + `}
`
	f, err := Parse([]byte(doc), testEnv(map[string]string{"TOKEN": "cdt1.x", "ERP_PW": "pw"}))
	if err != nil {
		t.Fatal(err)
	}
	a := f.Agent
	if a.Name != "store-12" || a.DataDir != "/var/lib/crossdock-agent" || len(a.Servers) != 2 || a.EnrollToken != "cdt1.x" ||
		a.QuotaBytes != 2<<30 || a.NoQUIC == nil || !*a.NoQUIC || a.Batch != 250 || a.Window != 0 {
		t.Errorf("agent = %+v", a)
	}
	if len(f.Connectors) != 2 {
		t.Fatalf("%d connectors", len(f.Connectors))
	}
	erp, wms := f.Connectors[0], f.Connectors[1]
	var s map[string]any
	if err := json.Unmarshal(erp.Settings, &s); err != nil {
		t.Fatal(err)
	}
	if s["dsn"] != "postgres://u:pw@db/erp" || s["poll"] != float64(5) {
		t.Errorf("erp settings %s", erp.Settings)
	}
	if !strings.Contains(string(erp.Settings), `"${literal}"`) {
		t.Errorf("$${ not turned into a literal ${: %s", erp.Settings)
	}
	if erp.Builtin != "sql" || wms.Path != "/opt/plugins/wms" || wms.Source == nil || *wms.Source {
		t.Errorf("connectors %+v %+v", erp, wms)
	}
	if string(wms.Settings) != `{"api_key":"s3cret"}` {
		t.Errorf("wms settings %s", wms.Settings)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`agent: {nmae: x}`, "agent.nmae: unknown field"},
		{`agent: {quota: lots}`, `agent.quota: "lots" is not a size`},
		{`agent: {servers: [cp1]}`, `agent.servers[0]: want host:port, got "cp1"`},
		{`agent: {batch: 0}`, "agent.batch: want a whole number from 1 to 10000, got 0"},
		{`agent: {name: "Bad Name"}`, "agent.name:"},
		{`agent: {enroll_token: "${env:NOPE}"}`, "agent.enroll_token: environment variable NOPE is not set"},
		{`connectors: {}`, "connectors: want a list, got a mapping"},
		{`connectors: [{builtin: sql}]`, "connectors[0].name: required"},
		{`connectors: [{name: a, builtin: sql}, {name: a, builtin: sql}]`, `connectors[1].name: "a" is already the name of connectors[0]`},
		{`connectors: [{name: a}]`, "connectors[0]: set builtin"},
		{`connectors: [{name: a, path: /x}]`, "connectors[0].sha256: required with path"},
		{`connectors: [{name: a, path: x, sha256: abc}]`, "connectors[0].path: \"x\" must be an absolute path"},
		{`connectors: [{name: a, path: /x, sha256: abc}]`, `connectors[0].sha256: "abc" is not 64 hex digits`},
		{`connectors: [{name: a, builtin: sql, settings: [1]}]`, "connectors[0].settings: want a mapping, got a list"},
		{"connectors:\n- name: a\n  builtin: sql\n- name: b\n  builtin: sql\n  settings: {dsn: '${env:DB_PW}'}", "connectors[1].settings.dsn: environment variable DB_PW is not set"},
		{`connectors: [{name: a, builtin: sql, settings: {t: [{k: "${vault:x}"}]}}]`, "connectors[0].settings.t[0].k: unknown reference ${vault:...}"},
		{`connectors: [{name: a, builtin: sql, settings: {k: "${file:rel}"}}]`, "connectors[0].settings.k: ${file:rel}: the path must be absolute"},
		{`connectors: [{name: a, builtin: sql, settings: {k: "${file:/nonexistent/x}"}}]`, "connectors[0].settings.k: read secret file"},
		{`connectors: [{name: a, builtin: sql, settings: {k: "${env:X} ${oops"}}]`, "connectors[0].settings.k: unterminated reference"},
		{`connectors: [{name: a, builtin: sql, source: "no"}]`, `connectors[0].source: want true or false, got "no"`},
		{`[1, 2]`, "want a mapping with agent and connectors, got a list"},
		{``, "the file is empty"},
		{"agent: [", "not valid YAML"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.doc), testEnv(map[string]string{"X": "1"}))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.doc, err, c.want)
			continue
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("Parse(%q): %T is not a *config.Error", c.doc, err)
		}
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte("connectors:\n  - name: c\n    builtin: example\n    settings: {sku: A}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(p)
	if err != nil || len(f.Connectors) != 1 || string(f.Connectors[0].Settings) != `{"sku":"A"}` {
		t.Fatalf("Load = %+v, %v", f, err)
	}
	if _, err := Load(p + ".missing"); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

// FuzzParse: any input gives a File or a *config.Error, never a panic; a File's settings
// are valid JSON objects.
func FuzzParse(f *testing.F) {
	f.Add([]byte("agent: {name: a, servers: [x:1], quota: 1GiB}\nconnectors: [{name: c, builtin: sql, settings: {dsn: '${env:X}'}}]"))
	f.Add([]byte(`{"connectors":[{"name":"c","path":"/p","sha256":"` + strings.Repeat("a", 64) + `","settings":{"a":["${file:/dev/null}", 1, true, null]}}]}`))
	env := Env{
		LookupEnv: func(k string) (string, bool) { return "v", k == "X" },
		ReadFile:  func(string) ([]byte, error) { return []byte("secret\n"), nil },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, env)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, not *config.Error", err, err)
			}
			return
		}
		for i, c := range cfg.Connectors {
			var m map[string]any
			if err := json.Unmarshal(c.Settings, &m); err != nil || m == nil {
				t.Fatalf("connectors[%d].settings %q is not a JSON object: %v", i, c.Settings, err)
			}
			if c.Name == "" || (c.Builtin == "") == (c.Path == "") {
				t.Fatalf("connectors[%d] accepted without name or with both/neither of builtin and path: %+v", i, c)
			}
		}
	})
}
