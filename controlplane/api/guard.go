package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/internal/pki"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/cluster/v1/clusterv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/delivery/v1/deliveryv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
	"github.com/crossdock/crossdock/proto/gen/crossdock/uplink/v1/uplinkv1connect"
)

// Limits bound what a caller can make a control plane node spend, above all before it
// has proved who it is. Zero fields take the defaults of DefaultLimits; a negative rate
// or burst turns that limit off.
type Limits struct {
	// MaxBodyBytes caps one message of an authenticated call (uplink batches, snapshot
	// restore chunks).
	MaxBodyBytes int64
	// OpenMaxBodyBytes caps the whole body of a call that carries its credential in the
	// body (agent Enroll, node Join) or is checked by its handler (partner Subscribe).
	OpenMaxBodyBytes int64
	// OpenReadTimeout bounds reading such a body: a caller that sends the headers and
	// then stalls is cut off. Authenticated calls have no body deadline (streams and
	// snapshot uploads last as long as they need).
	OpenReadTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and the request headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection that has no call in flight.
	IdleTimeout time.Duration
	// MaxConcurrentStreams caps the calls in flight on one HTTP/2 or HTTP/3 connection.
	MaxConcurrentStreams int
	// EnrollPerSecond and EnrollBurst limit Enroll and Join attempts per source address
	// (a token bucket: EnrollBurst at once, then EnrollPerSecond).
	EnrollPerSecond float64
	EnrollBurst     int
	// AuthFailuresPerSecond and AuthFailureBurst limit failed authentications per source
	// address; once spent, every call from that address that needs a bearer token or a
	// client certificate it does not present is refused until the bucket refills.
	AuthFailuresPerSecond float64
	AuthFailureBurst      int
	// RefusalLogBurst refusals per RefusalLogInterval are logged per source address and
	// reason; the rest are counted in one "suppressed N similar messages" line.
	RefusalLogBurst    int
	RefusalLogInterval time.Duration
}

// DefaultLimits are the limits a node runs with when Config.Limits leaves them zero.
var DefaultLimits = Limits{
	MaxBodyBytes:          32 << 20,
	OpenMaxBodyBytes:      64 << 10,
	OpenReadTimeout:       10 * time.Second,
	ReadHeaderTimeout:     10 * time.Second,
	IdleTimeout:           2 * time.Minute,
	MaxConcurrentStreams:  250,
	EnrollPerSecond:       1,
	EnrollBurst:           20,
	AuthFailuresPerSecond: 1,
	AuthFailureBurst:      20,
	RefusalLogBurst:       5,
	RefusalLogInterval:    time.Minute,
}

// WithDefaults returns l with every zero field set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	setInt64 := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setFloat := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	setInt64(&l.MaxBodyBytes, d.MaxBodyBytes)
	setInt64(&l.OpenMaxBodyBytes, d.OpenMaxBodyBytes)
	setDur(&l.OpenReadTimeout, d.OpenReadTimeout)
	setDur(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	setDur(&l.IdleTimeout, d.IdleTimeout)
	setInt(&l.MaxConcurrentStreams, d.MaxConcurrentStreams)
	setFloat(&l.EnrollPerSecond, d.EnrollPerSecond)
	setInt(&l.EnrollBurst, d.EnrollBurst)
	setFloat(&l.AuthFailuresPerSecond, d.AuthFailuresPerSecond)
	setInt(&l.AuthFailureBurst, d.AuthFailureBurst)
	setInt(&l.RefusalLogBurst, d.RefusalLogBurst)
	setDur(&l.RefusalLogInterval, d.RefusalLogInterval)
	return l
}

// access is what a procedure needs from its caller before its body is read.
type access int

const (
	// accessAuthenticated: a procedure the guard does not know: any verified client
	// certificate or a valid admin token; the handler checks the rest.
	accessAuthenticated  access = iota
	accessAdmin                 // an admin bearer token
	accessAgent                 // a verified agent client certificate
	accessAgentOrNode           // a verified agent or control plane node certificate
	accessNode                  // a verified control plane node certificate
	accessBodyCredential        // the credential is in the (small) body: Enroll, Join
	accessBearer                // a bearer credential the handler checks (partner Subscribe)
	accessPartnerGate           // a partner API key, checked by the partner gate before the body is read
	accessConsole               // the web console (/ui/): its own login and session cookie; small bodies only
)

// ConsolePrefix is where the web console is served (controlplane/console).
const ConsolePrefix = "/ui/"

func accessFor(procedure string) access {
	switch procedure {
	case uplinkv1connect.UplinkServiceEnrollProcedure, clusterv1connect.ClusterServiceJoinProcedure:
		return accessBodyCredential
	case uplinkv1connect.UplinkServiceStreamProcedure:
		return accessAgent
	case uplinkv1connect.UplinkServiceDownloadReleaseProcedure:
		return accessAgentOrNode // nodes copy releases from each other
	case clusterv1connect.ClusterServicePromoteProcedure:
		return accessNode
	case deliveryv1connect.PartnerServiceSubscribeProcedure:
		return accessBearer
	case partnerv1connect.PartnerNodeServiceForwardProcedure:
		return accessNode
	case PartnerOpenAPIPath:
		return accessPartnerGate // public: the contract
	case strings.TrimSuffix(ConsolePrefix, "/"):
		return accessConsole
	}
	if strings.HasPrefix(procedure, ConsolePrefix) {
		return accessConsole
	}
	service, _, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	switch service {
	case adminv1connect.AdminServiceName, routingv1connect.RoutingServiceName, deliveryv1connect.DeliveryServiceName,
		partnerv1connect.PartnerAdminServiceName,
		adminv1connect.OrderAdminServiceName, adminv1connect.TimelineServiceName,
		adminv1connect.FleetServiceName, adminv1connect.AccessServiceName:
		return accessAdmin
	case partnerv1connect.PartnerServiceName:
		return accessPartnerGate
	}
	return accessAuthenticated
}

// Guard is the HTTP middleware in front of the Connect handlers. It checks a call's
// credential from its headers and TLS state before anything reads the body, caps and
// time-limits the bodies of calls that carry their credential inside, limits enrollment
// attempts and failed authentications per source address, and logs refusals through a
// sampler so one client cannot flood the log.
type Guard struct {
	limits   Limits
	auth     *AdminAuth
	logger   *slog.Logger
	enroll   *addrLimiter
	failures *addrLimiter
	log      *LogSampler
	errw     *connect.ErrorWriter
	now      func() time.Time
}

// NewGuard returns a guard checking admin tokens against l.
func NewGuard(l *ledger.Ledger, limits Limits, logger *slog.Logger) *Guard {
	if logger == nil {
		logger = slog.Default()
	}
	limits = limits.WithDefaults()
	return &Guard{
		limits:   limits,
		auth:     &AdminAuth{Ledger: l},
		logger:   logger,
		enroll:   newAddrLimiter(limits.EnrollPerSecond, limits.EnrollBurst),
		failures: newAddrLimiter(limits.AuthFailuresPerSecond, limits.AuthFailureBurst),
		log:      &LogSampler{Logger: logger, Burst: limits.RefusalLogBurst, Interval: limits.RefusalLogInterval},
		errw:     connect.NewErrorWriter(),
		now:      time.Now,
	}
}

// CheckAdminToken checks an admin token given other than in a header (the console's
// login form, its bearer header) with the same failed-authentication budget per source
// address as the API: a spent budget refuses before the token is looked at.
func (g *Guard) CheckAdminToken(r *http.Request, token string) (name, role string, err error) {
	src, now := sourceKey(r.RemoteAddr), g.now()
	if ok, retry := g.failures.ok(src, now); !ok {
		return "", "", exhausted(retry, "too many failed authentications from %s", src)
	}
	p, err := g.auth.authenticate("Bearer " + token)
	if c := connect.CodeOf(err); err != nil && (c == connect.CodeUnauthenticated || c == connect.CodePermissionDenied) {
		g.failures.spend(src, now)
	}
	return p.name, p.role, err
}

// SetAdminAuth makes the guard check admin tokens with a (and record Authorize's calls
// through its Propose); NewGuard's own checks tokens only.
func (g *Guard) SetAdminAuth(a *AdminAuth) { g.auth = a }

// Authorize checks that a credential checked by CheckAdminToken (name, role) may call
// procedure, and records the call in the audit trail as the API's interceptor does:
// run is the call, made only when the role allows it. For callers outside Connect
// (the web console).
func (g *Guard) Authorize(procedure, name, role string, run func() error) error {
	p := principal{name: name, role: role}
	var err error
	if need := RequiredRole(procedure); roleRank(role) < roleRank(need) {
		err = connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs the %s role; credential %q is %s", path.Base(procedure), need, name, role))
	} else {
		err = run()
	}
	g.auth.audit(procedure, p, err)
	return err
}

// Limits returns the limits in force, defaults filled in.
func (g *Guard) Limits() Limits { return g.limits }

// Wrap returns next behind the guard.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := g.now()
		src := sourceKey(r.RemoteAddr)
		switch a := accessFor(r.URL.Path); a {
		case accessBodyCredential:
			if ok, retry := g.enroll.allow(src, now); !ok {
				g.refuse(w, r, src, "enrollment rate", exhausted(retry, "too many enrollment attempts from %s", src))
				return
			}
			if !g.limitBody(w, r, src) {
				return
			}
		case accessBearer:
			if raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); !ok || raw == "" {
				g.refuse(w, r, src, "no credential", connect.NewError(connect.CodeUnauthenticated, errors.New("credentials required: Authorization: Bearer <the stream destination's secret or an admin token>")))
				return
			}
			if !g.limitBody(w, r, src) {
				return
			}
		case accessPartnerGate:
			// partner.Server's gate authenticates the key, scope, rate and size.
		case accessConsole:
			// The console checks its session or the admin token (CheckAdminToken).
			if !g.limitBody(w, r, src) {
				return
			}
		default:
			if err := g.authenticate(r, a, src, now); err != nil {
				g.refuse(w, r, src, "authentication", err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate checks the bearer token or client certificate a procedure needs. A
// verified certificate of the right role passes even from an address whose failure
// budget is spent: the TLS handshake proved it, there is nothing to guess.
func (g *Guard) authenticate(r *http.Request, a access, src string, now time.Time) error {
	_, role, certErr := pki.PeerIdentity(r.TLS)
	switch a {
	case accessAgent:
		if certErr == nil && role == pki.RoleAgent {
			return nil
		}
	case accessNode:
		if certErr == nil && role == pki.RoleServer {
			return nil
		}
	case accessAgentOrNode:
		if certErr == nil && (role == pki.RoleAgent || role == pki.RoleServer) {
			return nil
		}
	case accessAuthenticated:
		if certErr == nil {
			return nil
		}
	}
	if ok, retry := g.failures.ok(src, now); !ok {
		return exhausted(retry, "too many failed authentications from %s", src)
	}
	var err error
	switch a {
	case accessAgent:
		err = certError(certErr, role, "client certificate required: enroll this agent first (crossdock agent --enroll-token TOKEN)", "only agents may stream events")
	case accessAgentOrNode:
		err = certError(certErr, role, "client certificate required: enroll this agent first (crossdock agent --enroll-token TOKEN)", "only agents and control plane nodes may download releases")
	case accessNode:
		err = certError(certErr, role, "a control plane node certificate is required", "only control plane nodes may call this")
	case accessAdmin, accessAuthenticated:
		err = g.auth.check(r.Header.Get("Authorization"))
	}
	if err == nil {
		return nil
	}
	if connect.CodeOf(err) == connect.CodeUnauthenticated || connect.CodeOf(err) == connect.CodePermissionDenied {
		g.failures.spend(src, now)
	}
	return err
}

func certError(err error, role pki.Role, missing, wrongRole string) error {
	switch {
	case errors.Is(err, pki.ErrNoPeerCert):
		return connect.NewError(connect.CodeUnauthenticated, errors.New(missing))
	case err != nil:
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("client certificate: %w", err))
	default:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("certificate role %q: %s", role, wrongRole))
	}
}

// limitBody caps the body of a call not yet authenticated and gives its reading a
// deadline. It reports false when it refused the call.
func (g *Guard) limitBody(w http.ResponseWriter, r *http.Request, src string) bool {
	max := g.limits.OpenMaxBodyBytes
	if r.ContentLength > max {
		g.refuse(w, r, src, "body size", connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("request body of %d bytes is over the %d bytes allowed before authentication", r.ContentLength, max)))
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(g.now().Add(g.limits.OpenReadTimeout)); err != nil {
		// Every transport the node serves (HTTP/1.1, HTTP/2, HTTP/3) supports deadlines.
		g.logger.Warn("cannot set a read deadline on an unauthenticated call; it is not time-limited", "procedure", r.URL.Path, "err", err)
		return true
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, clear: func() { _ = rc.SetReadDeadline(time.Time{}) }}
	return true
}

// deadlineBody lifts the read deadline once the body has been read to its end, so it
// cannot cut the connection while the handler works (HTTP/1.1 keeps reading the
// connection in the background to notice a client going away).
type deadlineBody struct {
	io.ReadCloser
	clear func()
	once  sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.once.Do(b.clear)
	}
	return n, err
}

func exhausted(retry time.Duration, format string, args ...any) error {
	secs := max(1, int(math.Ceil(retry.Seconds())))
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(format+"; retry in %ds", append(args, secs)...))
	err.Meta().Set("Retry-After", strconv.Itoa(secs))
	return err
}

// refuse answers err without reading the request body, and logs it through the sampler.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, src, reason string, err error) {
	g.log.Log(r.Context(), slog.LevelWarn, src+" "+reason+" "+connect.CodeOf(err).String(), "refused call",
		"remote", r.RemoteAddr, "procedure", r.URL.Path, "code", connect.CodeOf(err).String(), "err", err)
	// The body stays unread: HTTP/2 and HTTP/3 reset the stream; HTTP/1.1 closes the
	// connection after the answer when much is left, and otherwise reads the rest to
	// reuse the connection, which the deadline bounds (without it a caller that never
	// finishes its body holds the connection).
	_ = http.NewResponseController(w).SetReadDeadline(g.now().Add(g.limits.OpenReadTimeout))
	if g.errw.IsSupported(r) {
		_ = g.errw.Write(w, r, err)
		return
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		for k, vs := range ce.Meta() {
			w.Header()[k] = vs
		}
	}
	http.Error(w, err.Error(), httpStatus(connect.CodeOf(err)))
}

func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// sourceKey is the unit the per-address limits count: the IP of an IPv4 caller, the /64
// of an IPv6 one (a single host is commonly given a whole /64).
func sourceKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return a.String()
}

// maxTrackedKeys bounds the per-address state; callers beyond it share one bucket.
const maxTrackedKeys = 16384

// addrLimiter is a token bucket per source address.
type addrLimiter struct {
	limit rate.Limit
	burst int
	off   bool

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	overflow  *rate.Limiter
	lastSweep time.Time
}

func newAddrLimiter(perSecond float64, burst int) *addrLimiter {
	if perSecond < 0 || burst < 0 {
		return &addrLimiter{off: true}
	}
	return &addrLimiter{limit: rate.Limit(perSecond), burst: burst, m: map[string]*rate.Limiter{}, overflow: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

func (a *addrLimiter) get(key string, now time.Time) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.lastSweep) > time.Minute {
		// A full bucket is the same as a new one: forget it.
		for k, l := range a.m {
			if l.TokensAt(now) >= float64(a.burst) {
				delete(a.m, k)
			}
		}
		a.lastSweep = now
	}
	if l, ok := a.m[key]; ok {
		return l
	}
	if len(a.m) >= maxTrackedKeys {
		return a.overflow
	}
	l := rate.NewLimiter(a.limit, a.burst)
	a.m[key] = l
	return l
}

// allow takes a token for key, or reports how long until one is there.
func (a *addrLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if a.off {
		return true, 0
	}
	l := a.get(key, now)
	if l.AllowN(now, 1) {
		return true, 0
	}
	return false, a.wait(l, now)
}

// ok reports whether key has a token left, without taking it.
func (a *addrLimiter) ok(key string, now time.Time) (bool, time.Duration) {
	if a.off {
		return true, 0
	}
	l := a.get(key, now)
	if l.TokensAt(now) >= 1 {
		return true, 0
	}
	return false, a.wait(l, now)
}

// spend takes a token for key if there is one.
func (a *addrLimiter) spend(key string, now time.Time) {
	if !a.off {
		a.get(key, now).AllowN(now, 1)
	}
}

func (a *addrLimiter) wait(l *rate.Limiter, now time.Time) time.Duration {
	if a.limit <= 0 {
		return time.Hour
	}
	need := 1 - l.TokensAt(now)
	return time.Duration(need / float64(a.limit) * float64(time.Second))
}

// LogSampler logs at most Burst messages per key per Interval; the rest are counted,
// and the count is logged as one "suppressed N similar messages" line once the key's
// interval is over (at its next message, or when any later message sweeps it).
type LogSampler struct {
	Logger   *slog.Logger
	Burst    int
	Interval time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu        sync.Mutex
	keys      map[string]*sampleWindow
	lastSweep time.Time
}

type sampleWindow struct {
	start      time.Time
	count      int
	suppressed int
	level      slog.Level
	msg        string
}

type suppressedLine struct {
	key string
	w   sampleWindow
}

// Log logs msg with args unless key has had Burst messages in this interval.
func (s *LogSampler) Log(ctx context.Context, level slog.Level, key, msg string, args ...any) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	var flush []suppressedLine
	s.mu.Lock()
	if s.keys == nil {
		s.keys = map[string]*sampleWindow{}
	}
	if now.Sub(s.lastSweep) >= s.Interval {
		for k, w := range s.keys {
			if now.Sub(w.start) >= s.Interval {
				if w.suppressed > 0 {
					flush = append(flush, suppressedLine{k, *w})
				}
				delete(s.keys, k)
			}
		}
		s.lastSweep = now
	}
	w := s.keys[key]
	if w == nil && len(s.keys) >= maxTrackedKeys {
		key = "(other sources)"
		w = s.keys[key]
	}
	switch {
	case w == nil:
		w = &sampleWindow{start: now}
		s.keys[key] = w
	case now.Sub(w.start) >= s.Interval:
		if w.suppressed > 0 {
			flush = append(flush, suppressedLine{key, *w})
		}
		*w = sampleWindow{start: now}
	}
	emit := w.count < s.Burst
	if emit {
		w.count++
	} else {
		w.suppressed++
		w.level, w.msg = level, msg
	}
	s.mu.Unlock()
	for _, f := range flush {
		s.Logger.Log(ctx, f.w.level, fmt.Sprintf("suppressed %d similar messages", f.w.suppressed),
			"key", f.key, "message", f.w.msg, "since", f.w.start.Format(time.RFC3339))
	}
	if emit {
		s.Logger.Log(ctx, level, msg, args...)
	}
}

// ErrorLog returns a log.Logger for http.Server.ErrorLog that sends the server's own
// complaints (TLS handshake errors, bad requests) through the sampler, keyed by source
// address and complaint.
func (g *Guard) ErrorLog() *log.Logger {
	return log.New(errorLogWriter{g}, "", 0)
}

type errorLogWriter struct{ g *Guard }

func (e errorLogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	e.g.log.Log(context.Background(), slog.LevelWarn, errorLogKey(line), "http server", "err", line)
	return len(p), nil
}

// errorLogKey is the sampling key of a net/http server log line: the source address and
// the complaint for "http: TLS handshake error from 192.0.2.1:51234: EOF", the line
// itself for lines without a source.
func errorLogKey(line string) string {
	prefix, rest, ok := strings.Cut(line, " from ")
	if !ok {
		return line
	}
	addr, _, _ := strings.Cut(rest, ": ")
	return sourceKey(addr) + " " + prefix
}
