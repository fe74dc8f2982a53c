package console_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/console"
	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/pki"
)

// browserless is an HTTPS client that trusts the cluster CA and does not follow
// redirects (the tests look at them).
func browserless(t testing.TB, caPEM string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type page struct {
	status   int
	location string
	body     string
	cookies  []*http.Cookie
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values, hdr map[string]string) page {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(b), cookies: resp.Cookies()}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login posts the token to the login form and returns the session cookie.
func login(t *testing.T, c *http.Client, base, token string) *http.Cookie {
	t.Helper()
	p := do(t, c, http.MethodPost, base+"/ui/login", url.Values{"token": {token}, "next": {"/ui/fleet"}}, nil)
	if p.status != http.StatusSeeOther || p.location != "/ui/fleet" || len(p.cookies) != 1 {
		t.Fatalf("login: %d to %q with cookies %v, want 303 to /ui/fleet with a session cookie", p.status, p.location, p.cookies)
	}
	return p.cookies[0]
}

func withCookie(ck *http.Cookie) map[string]string {
	return map[string]string{"Cookie": ck.Name + "=" + ck.Value}
}

// TestConsoleRefusals: no credential gets the login page, a wrong token is refused
// (form and header), the session cookie is HttpOnly, Secure and SameSite=Strict,
// POSTs need the session's CSRF token and this origin, and a cookie is worth nothing
// after logout or on another node.
func TestConsoleRefusals(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	cc, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	c := browserless(t, cc.CAPEM)
	base := "https://" + srv.Addr()

	if p := do(t, c, http.MethodGet, base+"/ui/fleet", nil, nil); p.status != http.StatusSeeOther || p.location != "/ui/login?next=%2Fui%2Ffleet" {
		t.Errorf("no credential: %d to %q, want 303 to the login page", p.status, p.location)
	}
	if p := do(t, c, http.MethodGet, base+"/ui/login", nil, nil); p.status != http.StatusOK || !strings.Contains(p.body, `id="login-form"`) {
		t.Errorf("login page: %d %q", p.status, p.body)
	}
	if p := do(t, c, http.MethodGet, base+"/ui", nil, nil); p.status != http.StatusSeeOther || p.location != "/ui/" {
		t.Errorf("/ui: %d to %q, want 303 to /ui/", p.status, p.location)
	}
	_, _, bad, err := pki.NewAdminToken() // well formed, of no cluster
	if err != nil {
		t.Fatal(err)
	}
	if p := do(t, c, http.MethodPost, base+"/ui/login", url.Values{"token": {bad}}, nil); p.status != http.StatusUnauthorized || len(p.cookies) != 0 || !strings.Contains(p.body, "Refused") {
		t.Errorf("bad token: %d cookies %v, want 401 without a cookie", p.status, p.cookies)
	}
	if p := do(t, c, http.MethodGet, base+"/ui/fleet", nil, map[string]string{"Authorization": "Bearer " + bad}); p.status != http.StatusUnauthorized {
		t.Errorf("bad bearer token: %d, want 401", p.status)
	}
	if p := do(t, c, http.MethodGet, base+"/ui/fleet", nil, map[string]string{"Authorization": "Bearer " + cc.Token}); p.status != http.StatusOK || !strings.Contains(p.body, `id="fleet"`) {
		t.Errorf("good bearer token: %d, want the fleet page", p.status)
	}
	if p := do(t, c, http.MethodPost, base+"/ui/login", url.Values{"token": {cc.Token}}, map[string]string{"Origin": "https://evil.example"}); p.status != http.StatusForbidden || len(p.cookies) != 0 {
		t.Errorf("login posted from another origin: %d, want 403 without a cookie", p.status)
	}

	ck := login(t, c, base, cc.Token)
	if ck.Name != console.CookieName || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" {
		t.Errorf("cookie %+v, want HttpOnly, Secure, SameSite=Strict, path /ui/", ck)
	}
	p := do(t, c, http.MethodGet, base+"/ui/fleet", nil, withCookie(ck))
	m := csrfRE.FindStringSubmatch(p.body)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("fleet with the session: %d, csrf %v", p.status, m)
	}
	csrf := m[1]
	if h := p.body; strings.Contains(h, "http://") || strings.Contains(h, "<script") {
		t.Errorf("the page refers to an external asset or carries a script")
	}
	// CSRF: a POST without the token, with another session's, or from another origin.
	if p := do(t, c, http.MethodPost, base+"/ui/deadletters/retry", url.Values{"id": {"dl_x"}}, withCookie(ck)); p.status != http.StatusForbidden {
		t.Errorf("retry without the CSRF token: %d, want 403", p.status)
	}
	hdr := withCookie(ck)
	hdr["Origin"] = "https://evil.example"
	if p := do(t, c, http.MethodPost, base+"/ui/deadletters/retry", url.Values{"id": {"dl_x"}, "csrf": {csrf}}, hdr); p.status != http.StatusForbidden {
		t.Errorf("retry from another origin: %d, want 403", p.status)
	}
	if p := do(t, c, http.MethodPost, base+"/ui/logout", url.Values{}, withCookie(ck)); p.status != http.StatusForbidden {
		t.Errorf("logout without the CSRF token: %d, want 403", p.status)
	}

	// Another node does not know this node's session.
	other := controlplanetest.TestServer(t, func(cfg *controlplane.Config) { cfg.NodeID = "test-node-2" })
	occ, err := cliconfig.Load(other.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	oc := browserless(t, occ.CAPEM)
	if p := do(t, oc, http.MethodGet, "https://"+other.Addr()+"/ui/fleet", nil, withCookie(ck)); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/ui/login") {
		t.Errorf("this node's cookie on another node: %d to %q, want the login page", p.status, p.location)
	}

	// Logout ends the session: the same cookie gets the login page afterwards.
	if p := do(t, c, http.MethodPost, base+"/ui/logout", url.Values{"csrf": {csrf}}, withCookie(ck)); p.status != http.StatusSeeOther || p.location != "/ui/login" {
		t.Errorf("logout: %d to %q", p.status, p.location)
	}
	if p := do(t, c, http.MethodGet, base+"/ui/fleet", nil, withCookie(ck)); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/ui/login") {
		t.Errorf("the cookie after logout: %d to %q, want the login page", p.status, p.location)
	}
	if n := srv.Console().Sessions(); n != 0 {
		t.Errorf("%d sessions held after logout, want 0", n)
	}
}
