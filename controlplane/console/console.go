// Package console is the control plane's web console, served by every node at /ui/:
// fleet, destinations (with dead letters and their retry), partners, alerts and the
// business-key timeline. Server-rendered html/template pages embedded in the binary,
// no external assets and no JavaScript.
//
// Access: the admin token, either as "Authorization: Bearer" on each request or
// through the login form, which exchanges it for a session cookie (HttpOnly,
// SameSite=Strict, Secure over TLS, path /ui/). Sessions live in this node's memory:
// they end at logout, after SessionTTL, or when the node restarts, and one node's
// cookie means nothing to another. POST actions need the session's CSRF token in the
// form and, when the browser sends one, an Origin of this host.
//
// The pages read this node's replica through Source. Live state (agent streams,
// breakers, queues, attempts) is held by the leader; a follower's pages say so and
// link to the leader's console.
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

//go:embed templates/*.html static/*
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "crossdock_session"

// DefaultSessionTTL is how long a session lasts without a new login.
const DefaultSessionTTL = 12 * time.Hour

// MaxSessions bounds the sessions a node keeps; the oldest go first.
const MaxSessions = 1000

// Agent is a fleet row.
type Agent struct {
	ID           string
	Connected    bool
	Transport    string
	RemoteAddr   string
	Node         string
	Version      string
	Since        time.Time
	LastSeen     time.Time
	CommittedSeq uint64
	// Backlog is the outbox events not yet committed when the stream opened (the
	// agent's outbox last seq in its Hello minus the committed seq); BacklogKnown is
	// false when the agent is not connected here.
	Backlog      uint64
	BacklogKnown bool
	Revoked      bool
	Connectors   []Connector
	ReportedAt   time.Time
}

// Connector is a connector's state as its agent last reported it.
type Connector struct {
	Name      string
	State     string
	LastError string
	Captured  uint64
}

// Destination is a destinations row.
type Destination struct {
	Name            string
	Kind            string
	Active          bool
	Breaker         string
	LastError       string
	Cursor          uint64
	Lag             uint64
	LagAge          time.Duration
	Delivered       uint64
	DeadLettered    uint64
	Coalesced       uint64
	Queued          int
	InFlight        int
	OpenDeadLetters int
	// Throughput is events delivered per second since the previous page view (at
	// least a second before); -1 when there is no earlier sample.
	Throughput float64
}

// DeadLetter is a dead letter as the destination page lists it.
type DeadLetter struct {
	ID        string
	Route     string
	Seq       uint64
	EventID   string
	EventType string
	Keys      map[string]string
	Error     string
	State     string
	Attempts  int
	CreatedAt time.Time
}

// Partner is a partners row.
type Partner struct {
	Name        string
	DisplayName string
	Tier        string
	CallsToday  uint64
	ErrorsToday uint64
	Refusals    int
	QuotaUsed   uint64
	DailyQuota  uint64
	ActiveKeys  int
	// Calls is "method code" -> calls today.
	Calls map[string]uint64
}

// Alert is one alert as the alerts page shows it.
type Alert struct {
	Name     string
	Severity string
	// State: "firing", "resolved", "ok" ...
	State   string
	Since   time.Time
	Summary string
	Labels  map[string]string
}

// AlertSource lists the alerts (the alert evaluator, wired by the node once it
// exists); nil shows "no alerts configured".
type AlertSource interface {
	Alerts(ctx context.Context) ([]Alert, error)
}

// Source is what the pages read. The node implements it (controlplane/console.go).
type Source interface {
	// Node is this node's id; Leader whether it leads; LeaderConsole the leader's
	// console URL ("" when unknown or this node).
	Node() string
	Leader() bool
	LeaderConsole() string
	Agents(ctx context.Context) ([]Agent, error)
	Destinations(ctx context.Context) ([]Destination, error)
	DeadLetters(ctx context.Context, destination string, limit int) ([]DeadLetter, error)
	// RetryDeadLetter queues a dead letter for retry (the DLQ retry of the API) as who:
	// refused below the role the API asks for it, recorded in the audit trail.
	RetryDeadLetter(ctx context.Context, who Principal, id string) error
	Partners(ctx context.Context) ([]Partner, error)
	Timeline(ctx context.Context, keys map[string]string, limit int) (*adminv1.GetTimelineResponse, error)
}

// Config configures the console.
type Config struct {
	Source Source
	// CheckToken checks an admin token and says whose it is (api.Guard.CheckAdminToken:
	// with the failed authentication budget).
	CheckToken func(r *http.Request, token string) (Principal, error)
	// Alerts, when set, feeds the alerts page (see SetAlerts).
	Alerts     AlertSource
	SessionTTL time.Duration
	Logger     *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Console serves the pages.
type Console struct {
	cfg    Config
	log    *slog.Logger
	tmpl   map[string]*template.Template
	static http.Handler

	mu       sync.Mutex
	sessions map[[32]byte]*session
	alerts   AlertSource
}

// Principal is who is logged in: the admin credential's name and role (viewer,
// operator, admin; docs/fleet.md).
type Principal struct{ Name, Role string }

type session struct {
	who     Principal
	csrf    string
	created time.Time
	expires time.Time
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Source == nil || cfg.CheckToken == nil {
		return nil, errors.New("console: Source and CheckToken are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, log: cfg.Logger, sessions: map[[32]byte]*session{}, alerts: cfg.Alerts, tmpl: map[string]*template.Template{}}
	for _, page := range []string{"login", "fleet", "destinations", "destination", "partners", "alerts", "search"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		c.tmpl[page] = t
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix("/ui/static/", http.FileServerFS(static))
	return c, nil
}

// SetAlerts wires the alerts page to src (nil: "no alerts configured").
func (c *Console) SetAlerts(src AlertSource) {
	c.mu.Lock()
	c.alerts = src
	c.mu.Unlock()
}

func (c *Console) alertSource() AlertSource {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alerts
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// newSession stores a session and returns its id (the cookie value).
func (c *Console) newSession(who Principal) (string, *session) {
	now := c.cfg.Now()
	id := randomToken()
	s := &session{who: who, csrf: randomToken(), created: now, expires: now.Add(c.cfg.SessionTTL)}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, old := range c.sessions {
		if now.After(old.expires) {
			delete(c.sessions, k)
		}
	}
	for len(c.sessions) >= MaxSessions {
		var oldest [32]byte
		var at time.Time
		for k, old := range c.sessions {
			if at.IsZero() || old.created.Before(at) {
				oldest, at = k, old.created
			}
		}
		delete(c.sessions, oldest)
	}
	c.sessions[sessionKey(id)] = s
	return id, s
}

func (c *Console) lookup(r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	k := sessionKey(ck.Value)
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[k]
	if !ok {
		return nil
	}
	if c.cfg.Now().After(s.expires) {
		delete(c.sessions, k)
		return nil
	}
	return s
}

func (c *Console) endSession(r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, sessionKey(ck.Value))
		c.mu.Unlock()
	}
}

// Sessions is the number of sessions held (tests).
func (c *Console) Sessions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// sameOrigin reports whether a POST came from this console: a browser sends Origin on
// POSTs; when it does, it must be this host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// auth is who a request is: a session, a bearer token (no CSRF needed: a browser does
// not send it by itself), or nobody.
type auth struct {
	sess   *session
	bearer bool
	who    Principal
}

func (c *Console) authenticate(r *http.Request) (auth, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return auth{}, errors.New("Authorization: want Bearer <admin token>")
		}
		who, err := c.cfg.CheckToken(r, tok)
		if err != nil {
			return auth{}, err
		}
		return auth{bearer: true, who: who}, nil
	}
	if s := c.lookup(r); s != nil {
		return auth{sess: s, who: s.who}, nil
	}
	return auth{}, nil
}

// ServeHTTP routes /ui/...
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // no-referrer would make the browser send Origin: null on our own POSTs
	h.Set("Cache-Control", "no-store")
	path := strings.TrimPrefix(r.URL.Path, "/ui")
	if strings.HasPrefix(path, "/static/") && r.Method == http.MethodGet {
		h.Set("Cache-Control", "max-age=3600")
		c.static.ServeHTTP(w, r)
		return
	}
	switch {
	case path == "/login" && r.Method == http.MethodGet:
		c.render(w, r, http.StatusOK, "login", pageData{Title: "Log in", Next: safeNext(r.URL.Query().Get("next"))})
		return
	case path == "/login" && r.Method == http.MethodPost:
		c.login(w, r)
		return
	}
	a, err := c.authenticate(r)
	if err != nil {
		http.Error(w, "console: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if a.sess == nil && !a.bearer {
		if r.Method == http.MethodGet {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		http.Error(w, "console: log in first (/ui/login)", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "console: read the form: "+err.Error(), http.StatusBadRequest)
			return
		}
		if a.sess != nil && (!sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(a.sess.csrf)) != 1) {
			c.log.Warn("console: refused a POST without this session's CSRF token or from another origin", "path", r.URL.Path, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
			http.Error(w, "console: refused: the form is not from this console session (reload the page and try again)", http.StatusForbidden)
			return
		}
	}
	pd := pageData{Node: c.cfg.Source.Node(), Leader: c.cfg.Source.Leader(), LeaderConsole: c.cfg.Source.LeaderConsole(), Session: a.sess != nil}
	if a.sess != nil {
		pd.CSRF = a.sess.csrf
	}
	switch {
	case (path == "/" || path == "") && r.Method == http.MethodGet:
		http.Redirect(w, r, "/ui/fleet", http.StatusSeeOther)
	case path == "/logout" && r.Method == http.MethodPost:
		c.endSession(r)
		c.setCookie(w, r, "", -1)
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	case path == "/fleet" && r.Method == http.MethodGet:
		c.fleet(w, r, pd)
	case path == "/destinations" && r.Method == http.MethodGet:
		c.destinations(w, r, pd)
	case strings.HasPrefix(path, "/destinations/") && r.Method == http.MethodGet:
		c.destination(w, r, pd, strings.TrimPrefix(path, "/destinations/"))
	case path == "/deadletters/retry" && r.Method == http.MethodPost:
		c.retry(w, r, a.who)
	case path == "/partners" && r.Method == http.MethodGet:
		c.partners(w, r, pd)
	case path == "/alerts" && r.Method == http.MethodGet:
		c.alertsPage(w, r, pd)
	case path == "/search" && r.Method == http.MethodGet:
		c.search(w, r, pd)
	default:
		http.NotFound(w, r)
	}
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/fleet"
	}
	return next
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "console: refused: the login form was posted from another origin", http.StatusForbidden)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "console: read the form: "+err.Error(), http.StatusBadRequest)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		c.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Log in", Next: next, Error: "Paste the admin token: the token: line of admin.yaml in the data dir of the node that bootstrapped the cluster, or of your CLI config."})
		return
	}
	who, err := c.cfg.CheckToken(r, tok)
	if err != nil {
		c.log.Warn("console: login refused", "remote", r.RemoteAddr, "err", err)
		c.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Log in", Next: next, Error: "Refused: " + err.Error()})
		return
	}
	id, _ := c.newSession(who)
	c.setCookie(w, r, id, int(c.cfg.SessionTTL.Seconds()))
	c.log.Info("console: login", "remote", r.RemoteAddr, "actor", who.Name, "role", who.Role, "audit", true)
	http.Redirect(w, r, next, http.StatusSeeOther)
}
