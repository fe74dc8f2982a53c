package partner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/orders"
	"github.com/crossdock/crossdock/controlplane/routing"
	"github.com/crossdock/crossdock/internal/platform/ratelog"
	"github.com/crossdock/crossdock/internal/tracing"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
)

// Refusal reasons kept in the audit trail.
const (
	ReasonNoKey    = "no_key"
	ReasonBadKey   = "bad_key"
	ReasonRevoked  = "revoked"
	ReasonExpired  = "expired"
	ReasonPartner  = "no_partner"
	ReasonScope    = "scope"
	ReasonRate     = "rate"
	ReasonQuota    = "quota"
	ReasonSize     = "size"
	ReasonInvalid  = "invalid"
	servicePrefix  = "/" + partnerv1connect.PartnerServiceName + "/"
	policyDaily    = "daily"
	policyBurst    = "burst"
	secondsPerDay  = 86400
	minSeqMaxWait  = 5 * time.Second
	maxKeyIDLength = 128
)

// methodScopes is the scope each method needs.
var methodScopes = map[string]string{
	"GetAvailability": routing.ScopeAvailabilityRead,
	"GetPrices":       routing.ScopePricesRead,
	"ListItems":       routing.ScopeAvailabilityRead,
	"SubmitOrder":     routing.ScopeOrdersWrite,
	"CancelOrder":     routing.ScopeOrdersWrite,
	"RequestReturn":   routing.ScopeOrdersWrite,
	"GetOrder":        routing.ScopeOrdersRead,
	"ListOrders":      routing.ScopeOrdersRead,
}

// Server serves the partner API of one node: the gate in front of PartnerService and
// the service itself.
type Server struct {
	Ledger *ledger.Ledger
	Dir    *Directory
	// Views is what the API reads; nil answers unavailable.
	Views Reader
	// Orders is the order view (controlplane/orders); nil answers order calls unavailable.
	Orders *orders.View
	// Submit commits a partner's events through raft (orders.go).
	Submit Submitter
	Quota  *Quota
	Usage  *Usage
	Node   string
	Logger *slog.Logger
	// Now is the clock (time.Now when nil): key expiry is checked against it.
	Now func() time.Time
	// MinSeqWait bounds how long a call with min_seq waits for the views (5s when 0).
	MinSeqWait time.Duration

	mu       sync.Mutex
	limiters map[string]*partnerLimiter
	logs     *ratelog.Limiter // refusal lines per partner
	errw     *connect.ErrorWriter
	once     sync.Once
}

type partnerLimiter struct {
	lim   *rate.Limiter
	rps   float64
	burst int
}

type callKey struct{}

// call is what the gate learnt about an admitted call.
type call struct {
	partner *Partner
	keyID   string
	method  string
	tokens  float64 // burst tokens left after this call
}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Handler returns the partner service behind the gate, to mount on the API mux.
func (s *Server) Handler(opts ...connect.HandlerOption) (string, http.Handler) {
	s.once.Do(func() { s.errw = connect.NewErrorWriter() })
	// Answers under 8 KiB go uncompressed: gzip costs more CPU than it saves there.
	opts = append(opts, connect.WithInterceptors(counter{s}), connect.WithReadMaxBytes(routing.MaxPartnerBodyBytes), connect.WithCompressMinBytes(8<<10))
	path, h := partnerv1connect.NewPartnerServiceHandler(s, opts...)
	return path, s.Gate(h)
}

// Gate checks a partner call before anything reads its body: the key (from the
// Authorization header), the partner's scope for the method, its rate on this node
// and the body size. The daily quota is taken by the handler once the request is
// valid, so refused calls never consume it.
func (s *Server) Gate(next http.Handler) http.Handler {
	s.once.Do(func() { s.errw = connect.NewErrorWriter() })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, ok := strings.CutPrefix(r.URL.Path, servicePrefix)
		scope, known := methodScopes[method]
		if !ok || !known {
			next.ServeHTTP(w, r) // Connect answers unknown procedures
			return
		}
		if tracing.Enabled() {
			// The call's span, a child of the partner's traceparent if it sent one;
			// the SubmitOrder it carries continues in the order event's trace.
			ctx, span := tracing.Tracer().Start(tracing.ExtractHeader(r.Context(), r.Header), tracing.SpanPartner+" "+method,
				trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("rpc.method", method)))
			defer span.End()
			r = r.WithContext(ctx)
		}
		now := s.now()
		p, keyID, err := s.authenticate(r.Header.Get("Authorization"), now, method)
		if err == nil && tracing.Enabled() {
			trace.SpanFromContext(r.Context()).SetAttributes(tracing.AttrPartner.String(p.Name))
		}
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		if !p.Spec.HasScope(scope) {
			s.refuse(w, r, s.audit(p.Name, method, ReasonScope, keyID, now,
				connect.NewError(connect.CodePermissionDenied, fmt.Errorf("partner %s does not hold the scope %s that %s needs (ask your Crossdock operator)", p.Name, scope, method))))
			return
		}
		lim := s.limiter(p)
		if !lim.AllowN(now, 1) {
			retry := retryAfter(lim, now)
			err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("rate limit: %g requests per second with bursts of %d for partner %s on this node; retry in %ds",
				p.Limits.RequestsPerSecond, p.Limits.Burst, p.Name, retry))
			err.Meta().Set("Retry-After", strconv.Itoa(retry))
			setRateLimitHeaders(err.Meta(), p, 0, retry, -1, 0)
			s.refuse(w, r, s.audit(p.Name, method, ReasonRate, keyID, now, err))
			return
		}
		max := int64(p.Limits.MaxBodyBytes)
		if r.ContentLength > max || int64(len(r.URL.RawQuery)) > max {
			n := max64(r.ContentLength, int64(len(r.URL.RawQuery)))
			s.refuse(w, r, s.audit(p.Name, method, ReasonSize, keyID, now, connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("request of %d bytes is over the %d bytes partner %s may send in one call", n, max, p.Name))))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		c := &call{partner: p, keyID: keyID, method: method, tokens: lim.TokensAt(now)}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	})
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// authenticate finds the key's partner. Errors are Connect errors; those about a known
// partner are in its audit trail.
func (s *Server) authenticate(header string, now time.Time, method string) (*Partner, string, error) {
	id, secret, reason, err := ParseAuthorization(header)
	if err != nil {
		s.Usage.Call("", method, reason, "", now)
		s.logRefusal("", method, reason, "", err.Error())
		return nil, "", connect.NewError(connect.CodeUnauthenticated, err)
	}
	k, found, err := s.Ledger.PartnerKey(id)
	if err != nil {
		return nil, "", connect.NewError(connect.CodeInternal, fmt.Errorf("read API key: %w", err))
	}
	unknown := connect.NewError(connect.CodeUnauthenticated, errors.New("API key not recognised by this cluster"))
	if !found {
		s.Usage.Call("", method, ReasonBadKey, "", now)
		s.logRefusal("", method, ReasonBadKey, "", unknown.Message())
		return nil, "", unknown
	}
	partner := k.GetPartner()
	if !SecretMatches(k.GetSecretSha256(), secret) {
		return nil, "", s.audit(partner, method, ReasonBadKey, id, now, unknown)
	}
	if k.GetRevoked() {
		return nil, "", s.audit(partner, method, ReasonRevoked, id, now, connect.NewError(connect.CodeUnauthenticated,
			fmt.Errorf("API key %s was revoked at %s", KeyIDPrefix(id), k.GetRevokedAt().AsTime().UTC().Format(time.RFC3339))))
	}
	if exp := k.GetExpiresAt(); exp != nil && !now.Before(exp.AsTime()) {
		return nil, "", s.audit(partner, method, ReasonExpired, id, now, connect.NewError(connect.CodeUnauthenticated,
			fmt.Errorf("API key %s expired at %s; use the key your operator rotated to", KeyIDPrefix(id), exp.AsTime().UTC().Format(time.RFC3339))))
	}
	p, ok, err := s.Dir.Get(partner)
	if err != nil {
		return nil, "", connect.NewError(connect.CodeInternal, err)
	}
	if !ok {
		return nil, "", s.audit(partner, method, ReasonPartner, id, now, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("partner %s is not configured on this cluster", partner)))
	}
	return p, id, nil
}

// audit records a refusal of a known partner's call and returns err.
func (s *Server) audit(partner, method, reason, keyID string, at time.Time, err error) error {
	var ce *connect.Error
	msg := err.Error()
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	s.Usage.Refuse(partner, refusal(s.Node, method, reason, keyID, msg, at))
	s.Usage.Call(partner, method, connect.CodeOf(err).String(), keyID, at)
	s.logRefusal(partner, method, reason, keyID, msg)
	return err
}

// logRefusal logs a refused call once, rate-limited per partner (a partner's client
// retrying with a revoked key would otherwise fill the log).
func (s *Server) logRefusal(partner, method, reason, keyID, msg string) {
	s.mu.Lock()
	if s.logs == nil {
		s.logs = ratelog.New(0, 0)
	}
	l := s.logs
	s.mu.Unlock()
	key := partner
	if key == "" {
		key = "(no partner)" // no key, or one this cluster does not know
	}
	args := []any{"partner", partner, "method", method, "reason", reason, "err", msg}
	if keyID != "" {
		args = append(args, "key", KeyIDPrefix(keyID))
	}
	l.Log(s.logger(), slog.LevelWarn, key, "partner API: call refused", args...)
}

func (s *Server) limiter(p *Partner) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limiters == nil {
		s.limiters = map[string]*partnerLimiter{}
	}
	l := s.limiters[p.Name]
	if l == nil || l.rps != p.Limits.RequestsPerSecond || l.burst != p.Limits.Burst {
		l = &partnerLimiter{lim: rate.NewLimiter(rate.Limit(p.Limits.RequestsPerSecond), p.Limits.Burst), rps: p.Limits.RequestsPerSecond, burst: p.Limits.Burst}
		s.limiters[p.Name] = l
	}
	return l.lim
}

// retryAfter is the whole seconds until the bucket holds a token again (at least 1).
func retryAfter(l *rate.Limiter, now time.Time) int {
	need := 1 - l.TokensAt(now)
	if l.Limit() <= 0 {
		return 60
	}
	return max(1, int(math.Ceil(need/float64(l.Limit()))))
}

// refuse answers err without reading the body.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if tracing.Enabled() {
		span := trace.SpanFromContext(r.Context())
		span.SetAttributes(attribute.String("rpc.connect.code", connect.CodeOf(err).String()))
		span.SetStatus(codes.Error, err.Error())
	}
	if s.errw.IsSupported(r) {
		_ = s.errw.Write(w, r, err)
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
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// setRateLimitHeaders writes the RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers-11): the partner's burst on this node and its
// daily quota. dailyLeft < 0 leaves the daily remaining out (not known yet).
func setRateLimitHeaders(h http.Header, p *Partner, burstLeft float64, burstReset int, dailyLeft int64, now int64) {
	h.Set("RateLimit-Policy", fmt.Sprintf(`"%s";q=%d;w=1, "%s";q=%d;w=%d`, policyBurst, p.Limits.Burst, policyDaily, p.Limits.DailyQuota, secondsPerDay))
	v := fmt.Sprintf(`"%s";r=%d;t=%d`, policyBurst, int(math.Max(0, math.Floor(burstLeft))), burstReset)
	if dailyLeft >= 0 {
		v += fmt.Sprintf(`, "%s";r=%d;t=%d`, policyDaily, dailyLeft, secondsPerDay-now%secondsPerDay)
	}
	h.Set("RateLimit", v)
}

// counter counts every admitted call per partner, method and code.
type counter struct{ s *Server }

func (c counter) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if tracing.Enabled() && err != nil {
			span := trace.SpanFromContext(ctx)
			span.SetAttributes(attribute.String("rpc.connect.code", connect.CodeOf(err).String()))
			span.SetStatus(codes.Error, err.Error())
		}
		if cl := callFrom(ctx); cl != nil {
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			c.s.Usage.Call(cl.partner.Name, cl.method, code, cl.keyID, c.s.now())
		}
		return res, err
	}
}

func (c counter) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (c counter) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// ParseAuthorization reads a partner key from an Authorization header value: the key's
// id and secret, or the refusal reason (ReasonNoKey, ReasonBadKey) and what to tell
// the caller.
func ParseAuthorization(header string) (id, secret, reason string, err error) {
	scheme, raw, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return "", "", ReasonNoKey, errors.New("API key required: Authorization: Bearer cdk_...")
	}
	id, secret, err = ParseKey(strings.TrimSpace(raw))
	if err != nil {
		return "", "", ReasonBadKey, fmt.Errorf("API key: %w", err)
	}
	return id, secret, "", nil
}

// StreamAllowed reports whether an Authorization header holds a live partner key whose
// partner has events:read and lists destination among its destinations: the partner
// event stream (crossdock.delivery.v1.PartnerService/Subscribe) then accepts it. A
// refusal of a known partner goes to its audit trail.
func (s *Server) StreamAllowed(header, destination string) bool {
	const method = "Subscribe"
	if _, _, _, err := ParseAuthorization(header); err != nil {
		return false // not a partner key: the stream checks its other credentials
	}
	now := s.now()
	p, keyID, err := s.authenticate(header, now, method)
	if err != nil {
		return false
	}
	if !p.Spec.HasScope(routing.ScopeEventsRead) {
		_ = s.audit(p.Name, method, ReasonScope, keyID, now, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("partner %s does not hold events:read", p.Name)))
		return false
	}
	for _, d := range p.Spec.Destinations {
		if d == destination {
			s.Usage.Call(p.Name, method, "ok", keyID, now)
			return true
		}
	}
	_ = s.audit(p.Name, method, ReasonScope, keyID, now, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("destination %s is not one of partner %s's destinations", destination, p.Name)))
	return false
}
