package testsvc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/crossdock/crossdock/internal/testkit/testutil"
)

// Tryton is a running trytond (6.0, modules sale and stock) owned by a test, with a
// company ("Crossdock Test Co", currency EUR) that the admin user works in. Sales can
// be quoted and stock moves done right away; confirming a sale needs invoice_method
// "manual" because no chart of accounts is set up.
type Tryton struct {
	URL      string // http://127.0.0.1:PORT
	Database string
	User     string // admin
	Password string
	Dir      string
	// Company and Currency are the ids of the company set up for the admin.
	Company, Currency int64

	session string
	context map[string]any
}

// TrytonInitDuration is how long the last StartTryton spent in trytond-admin (creating
// the database and activating sale and stock with their dependencies).
var TrytonInitDuration time.Duration

// StartTryton creates a fresh SQLite Tryton database in a temporary directory, activates
// the sale and stock modules (with their dependencies: account, company, party, product,
// ...), starts trytond on a free loopback port and sets up a company. It takes about 10 s
// of CPU, mostly trytond-admin; share one instance between the subtests of a package.
func StartTryton(t testing.TB) *Tryton {
	t.Helper()
	trytond, err := LookPath("trytond")
	if err != nil {
		Missing(t, "Tryton (Debian packages tryton-server, tryton-modules-sale, tryton-modules-stock)", err)
	}
	admin, err := LookPath("trytond-admin")
	if err != nil {
		Missing(t, "Tryton (Debian packages tryton-server, tryton-modules-sale, tryton-modules-stock)", err)
	}
	if err := trytonModules(trytond, "sale", "stock"); err != nil {
		Missing(t, "Tryton modules sale and stock (Debian packages tryton-modules-sale, tryton-modules-stock)", err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	tr := &Tryton{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Database: "crossdock", User: "admin",
		Password: "Cd-" + randomHex(12), Dir: dir}
	conf := filepath.Join(dir, "trytond.conf")
	writeFile(t, conf, fmt.Sprintf("[database]\nuri = sqlite://\npath = %s\nlanguage = en\n\n[web]\nlisten = 127.0.0.1:%d\n", dir, port))
	// The SQLite backend opens an existing file only; trytond-admin then initialises it.
	writeFile(t, filepath.Join(dir, tr.Database+".sqlite"), "")
	passFile := filepath.Join(dir, "admin.pass")
	writeFile(t, passFile, tr.Password+"\n")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, admin, "-c", conf, "-d", tr.Database, "--all",
		"-u", "sale", "stock", "--activate-dependencies", "--email", "admin@example.com")
	cmd.Env = append(os.Environ(), "TRYTONPASSFILE="+passFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("trytond-admin: %v\n%s", err, tail(out))
	}
	TrytonInitDuration = time.Since(start)
	t.Logf("trytond-admin initialised the database in %s", TrytonInitDuration.Round(100*time.Millisecond))

	logf, err := os.Create(filepath.Join(dir, "trytond.log"))
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(trytond, "-c", conf)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("start trytond: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("trytond log:\n%s", tail(b))
		}
	})
	testutil.WaitFor(t, 60*time.Second, "trytond answering JSON-RPC", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("trytond exited:\n%s", tail(b))
		default:
		}
		_, err := tr.rpc(context.Background(), "", "/", "common.server.version", []any{})
		return err == nil
	})
	tr.setup(t)
	return tr
}

// trytonModules checks that trytond's Python finds the modules, by importing them with
// the interpreter named on trytond's #! line.
func trytonModules(trytond string, mods ...string) error {
	b, err := os.ReadFile(trytond)
	if err != nil {
		return err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := bytes.Fields(bytes.TrimPrefix(line, []byte("#!")))
	if len(fields) == 0 {
		return fmt.Errorf("%s has no #! line", trytond)
	}
	args := []string{}
	for _, f := range fields[1:] {
		args = append(args, string(f))
	}
	imports := ""
	for _, m := range mods {
		imports += "import trytond.modules." + m + "\n"
	}
	args = append(args, "-c", imports)
	if out, err := exec.Command(string(fields[0]), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, tail(out))
	}
	return nil
}

// setup logs in and creates the currency and company sales need.
func (tr *Tryton) setup(t testing.TB) {
	t.Helper()
	var cur []int64
	tr.Into(t, &cur, "currency.currency", "create", []any{map[string]any{"name": "Euro", "code": "EUR", "symbol": "€", "digits": 2}})
	var party []int64
	tr.Into(t, &party, "party.party", "create", []any{map[string]any{"name": "Crossdock Test Co"}})
	var co []int64
	tr.Into(t, &co, "company.company", "create", []any{map[string]any{"party": party[0], "currency": cur[0]}})
	var me []struct {
		ID int64 `json:"id"`
	}
	tr.Into(t, &me, "res.user", "search_read", []any{[]any{"login", "=", tr.User}}, 0, 1, nil, []string{"id"})
	tr.Model(t, "res.user", "write", []int64{me[0].ID}, map[string]any{"companies": []any{[]any{"add", co}}, "company": co[0]})
	tr.Company, tr.Currency = co[0], cur[0]
	tr.session = "" // log in again so the preferences carry the company
}

// Model calls model.<name>.<method> with args and the admin's context through Tryton's
// JSON-RPC, failing t on any error.
func (tr *Tryton) Model(t testing.TB, name, method string, args ...any) json.RawMessage {
	t.Helper()
	res, err := tr.Call(context.Background(), "model."+name+"."+method, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Into is Model decoding the result into out.
func (tr *Tryton) Into(t testing.TB, out any, name, method string, args ...any) {
	t.Helper()
	res := tr.Model(t, name, method, args...)
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("model.%s.%s: decode %s: %v", name, method, res, err)
	}
}

// Call calls a JSON-RPC method on the database as the admin, appending the admin's
// context (company, language) as the last parameter.
func (tr *Tryton) Call(ctx context.Context, method string, args ...any) (json.RawMessage, error) {
	if tr.session == "" {
		res, err := tr.rpc(ctx, "", "/"+tr.Database+"/", "common.db.login", []any{tr.User, map[string]any{"password": tr.Password}, "en"})
		if err != nil {
			return nil, err
		}
		var pair [2]json.RawMessage
		var uid int64
		var key string
		if json.Unmarshal(res, &pair) != nil || json.Unmarshal(pair[0], &uid) != nil || json.Unmarshal(pair[1], &key) != nil {
			return nil, fmt.Errorf("tryton login: unexpected answer %s", res)
		}
		tr.session = "Session " + base64.StdEncoding.EncodeToString([]byte(tr.User+":"+strconv.FormatInt(uid, 10)+":"+key))
		prefs, err := tr.rpc(ctx, tr.session, "/"+tr.Database+"/", "model.res.user.get_preferences", []any{true, map[string]any{}})
		if err != nil {
			return nil, err
		}
		tr.context = nil
		if err := json.Unmarshal(prefs, &tr.context); err != nil {
			return nil, fmt.Errorf("tryton preferences: %w", err)
		}
	}
	return tr.rpc(ctx, tr.session, "/"+tr.Database+"/", method, append(append([]any{}, args...), tr.context))
}

func (tr *Tryton) rpc(ctx context.Context, auth, path, method string, params []any) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"id": 1, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tr.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("tryton %s: HTTP %d: %s", method, resp.StatusCode, tail(b))
	}
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("tryton %s: %w: %s", method, err, tail(b))
	}
	if len(r.Error) > 0 && string(r.Error) != "null" {
		return nil, fmt.Errorf("tryton %s: %s", method, tail(r.Error))
	}
	return r.Result, nil
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tail keeps the end of a long output.
func tail(b []byte) string {
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
