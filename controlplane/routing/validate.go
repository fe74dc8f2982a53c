package routing

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/crossdock/crossdock/internal/canonical"
	"github.com/crossdock/crossdock/internal/seal"
)

// EventTypes are the event types a route may match.
var EventTypes = []string{
	canonical.TypeItem, canonical.TypeInventoryLevel, canonical.TypePrice, canonical.TypeOrder,
	canonical.TypeOrderAck, canonical.TypeShipment, canonical.TypeInvoice, canonical.TypeSalesReturn,
	canonical.TypeOrderCancel, canonical.TypeOrderStatus,
	canonical.TypeEdiInterchange,
}

var (
	keyNameRE    = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	headerNameRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
	secretRefRE  = regexp.MustCompile(`^\$\{(env|file):([^}]+)\}$`)
)

// Headers a destination may not set: the delivery engine writes them.
var reservedHeaders = []string{"content-type", "content-length", "host", "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key"}

// Limits on fields.
const (
	MaxWebhookTimeout = 5 * time.Minute
	DefaultTimeout    = 10 * time.Second
	maxHeaders        = 32
	maxKeyValue       = canonical.MaxValueLen
)

// SecretPrefix starts every Standard Webhooks signing secret.
const SecretPrefix = "whsec_"

func validateDestination(p *problems, s *DestinationSpec) {
	only := func(field string, set bool, typ string) {
		if set {
			p.add("spec."+field, "only for type %s", typ)
		}
	}
	switch s.Type {
	case DestinationWebhook:
		validateURL(p, s.URL)
		switch {
		case s.Secret == "":
			p.add("spec.secret", "required: the Standard Webhooks signing secret (%s followed by base64), or ${env:NAME} / ${file:PATH}", SecretPrefix)
		case secretRefRE.MatchString(s.Secret):
		case seal.IsSealed(s.Secret):
			checkSealed(p, s.Secret)
		default:
			if err := checkSecret(s.Secret); err != nil {
				p.add("spec.secret", "%s", err.Error())
			}
		}
		if len(s.Headers) > maxHeaders {
			p.add("spec.headers", "more than %d headers", maxHeaders)
		}
		for _, k := range sortedKeys(s.Headers) {
			switch {
			case !headerNameRE.MatchString(k):
				p.add("spec.headers."+k, "not a valid HTTP header name")
			case slices.Contains(reservedHeaders, strings.ToLower(k)):
				p.add("spec.headers."+k, "set by the delivery engine; it cannot be overridden")
			case strings.ContainsAny(s.Headers[k], "\r\n\x00"):
				p.add("spec.headers."+k, "value contains a line break or NUL")
			}
		}
		if s.Timeout != nil && (s.Timeout.Duration <= 0 || s.Timeout.Duration > MaxWebhookTimeout) {
			p.add("spec.timeout", "%s is outside (0, %s]", s.Timeout.Duration, MaxWebhookTimeout)
		}
		only("partner", s.Partner != "", DestinationStream)
		only("agent", s.Agent != "", DestinationAgent)
		only("connector", s.Connector != "", DestinationAgent)
	case DestinationStream:
		if !canonical.ValidName(s.Partner) {
			p.add("spec.partner", "required: the partner name (1-64 characters of a-z, 0-9, '-', '_' or '.')")
		}
		// The secret is the partner's credential for the stream (Authorization: Bearer
		// <secret>), until partners have API keys of their own.
		if seal.IsSealed(s.Secret) {
			checkSealed(p, s.Secret)
		} else if s.Secret != "" && !secretRefRE.MatchString(s.Secret) {
			if err := checkSecret(s.Secret); err != nil {
				p.add("spec.secret", "%s", err.Error())
			}
		}
		webhookOnly(p, s, DestinationStream)
		only("agent", s.Agent != "", DestinationAgent)
		only("connector", s.Connector != "", DestinationAgent)
	case DestinationAgent:
		if !canonical.ValidName(s.Agent) {
			p.add("spec.agent", "required: the agent id (1-64 characters of a-z, 0-9, '-', '_' or '.')")
		}
		if !canonical.ValidName(s.Connector) {
			p.add("spec.connector", "required: the name of a sink connector on the agent")
		}
		webhookOnly(p, s, DestinationAgent)
		only("partner", s.Partner != "", DestinationStream)
	case "":
		p.add("spec.type", "required: webhook, stream or agent")
	default:
		p.add("spec.type", "unknown destination type %q (want webhook, stream or agent)", s.Type)
	}
	if s.Policy != "" && !canonical.ValidName(s.Policy) {
		p.add("spec.policy", "%q is not a valid policy name", s.Policy)
	}
}

// webhookOnly refuses webhook settings on another type; a stream may have a secret (its
// partner's credential).
func webhookOnly(p *problems, s *DestinationSpec, typ string) {
	for _, f := range []struct {
		name string
		set  bool
	}{{"url", s.URL != ""}, {"secret", s.Secret != "" && typ != DestinationStream}, {"headers", len(s.Headers) > 0}, {"timeout", s.Timeout != nil}, {"acceptsBatches", s.AcceptsBatches}} {
		if f.set {
			p.add("spec."+f.name, "only for type webhook, not %s", typ)
		}
	}
}

func validateURL(p *problems, raw string) {
	if raw == "" {
		p.add("spec.url", "required for a webhook")
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		p.add("spec.url", "%q is not an absolute URL (https://host/path, no user info or fragment)", raw)
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			p.add("spec.url", "must be https (plain http is allowed only to localhost, for tests and demos)")
		}
	default:
		p.add("spec.url", "scheme %q: must be https", u.Scheme)
	}
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkSealed checks the shape of a sealed secret (as the control plane stores it);
// whether it opens is checked where the keys are (apply, delivery).
func checkSealed(p *problems, s string) {
	if _, ok := seal.KeyID(s); !ok {
		p.add("spec.secret", "a sealed secret (%s<key id>:...) without a key id", seal.Prefix)
	}
}

// checkSecret validates a resolved Standard Webhooks secret: "whsec_" then base64 of 24
// to 64 bytes.
func checkSecret(s string) error {
	raw, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return fmt.Errorf("must start with %q (a Standard Webhooks secret), or be ${env:NAME} / ${file:PATH}", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("the part after %q is not standard base64", SecretPrefix)
	}
	if len(key) < 24 || len(key) > 64 {
		return fmt.Errorf("key is %d bytes; use 24 to 64 random bytes", len(key))
	}
	return nil
}

// SecretKey returns the HMAC key of a resolved "whsec_" secret.
func SecretKey(secret string) ([]byte, error) {
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
}

// MaskSecret shows a secret as a fingerprint: enough to see that it changed, nothing
// that reveals it.
func MaskSecret(s string) string {
	if s == "" {
		return ""
	}
	if secretRefRE.MatchString(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "***masked*** sha256:" + hex.EncodeToString(sum[:4])
}

// ResolveSecrets replaces ${env:NAME} and ${file:PATH} webhook secrets with their
// values, using lookupEnv and readFile (os.LookupEnv and os.ReadFile in the CLI; a
// file's surrounding whitespace is trimmed). The resolved secret is validated.
func ResolveSecrets(docs []*Document, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) error {
	var errs []*FieldError
	for _, d := range docs {
		if d.Destination == nil {
			continue
		}
		m := secretRefRE.FindStringSubmatch(d.Destination.Secret)
		if m == nil {
			continue
		}
		var val string
		switch m[1] {
		case "env":
			v, ok := lookupEnv(m[2])
			if !ok {
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.secret", Msg: fmt.Sprintf("environment variable %s is not set", m[2])})
				continue
			}
			val = v
		case "file":
			b, err := readFile(m[2])
			if err != nil {
				errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.secret", Msg: fmt.Sprintf("read %s: %v", m[2], err)})
				continue
			}
			val = strings.TrimSpace(string(b))
		}
		if err := checkSecret(val); err != nil {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.secret", Msg: fmt.Sprintf("%s from %s: %v", m[1], m[2], err)})
			continue
		}
		d.Destination.Secret = val
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}

// RequireResolved refuses documents that still hold a ${env:...} or ${file:...}
// secret: only the CLI can resolve them, on the operator's machine.
func RequireResolved(docs []*Document) error {
	var errs []*FieldError
	for _, d := range docs {
		if d.Destination != nil && secretRefRE.MatchString(d.Destination.Secret) {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.secret", Msg: fmt.Sprintf("%s must be resolved before apply (crossdock apply resolves it from your environment)", d.Destination.Secret)})
		}
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}

func validateRoute(p *problems, d *Document) {
	s := d.Route
	for i, t := range s.Match.Types {
		path := fmt.Sprintf("spec.match.types[%d]", i)
		switch {
		case !slices.Contains(EventTypes, t):
			p.add(path, "unknown event type %q (known: %s)", t, strings.Join(EventTypes, ", "))
		case slices.Index(s.Match.Types, t) < i:
			p.add(path, "%q listed twice", t)
		}
	}
	for _, k := range sortedKeys(s.Match.Keys) {
		path := "spec.match.keys." + k
		v := s.Match.Keys[k]
		switch {
		case len(k) > canonical.MaxKeyLen || !keyNameRE.MatchString(k):
			p.add(path, "key name must be lower_snake_case, at most %d characters", canonical.MaxKeyLen)
		case v == "" || len(v) > maxKeyValue:
			p.add(path, "value must be 1 to %d characters (exact, or a glob with * and ?)", maxKeyValue)
		}
	}
	switch {
	case s.Destination != "" && len(s.Destinations) > 0:
		p.add("spec.destinations", "use destination or destinations, not both")
	case s.Destination == "" && len(s.Destinations) == 0:
		p.add("spec.destination", "required: the name of a Destination")
	case s.Destination != "" && !canonical.ValidName(s.Destination):
		p.add("spec.destination", "%q is not a valid destination name", s.Destination)
	}
	for i, n := range s.Destinations {
		path := fmt.Sprintf("spec.destinations[%d]", i)
		switch {
		case !canonical.ValidName(n):
			p.add(path, "%q is not a valid destination name", n)
		case slices.Index(s.Destinations, n) < i:
			p.add(path, "%q listed twice", n)
		}
	}
	c, errs := compileRoute(d)
	p.errs = append(p.errs, errs...)
	if len(errs) == 0 {
		d.compiled = c
	}
}

func validatePolicy(p *problems, s *PolicySpec) {
	if r := s.RateLimit; r != nil {
		if r.PerSecond <= 0 || r.PerSecond > 100_000 {
			p.add("spec.rateLimit.perSecond", "%g is outside (0, 100000]", r.PerSecond)
		}
		if r.Burst < 0 || r.Burst > 1_000_000 {
			p.add("spec.rateLimit.burst", "%d is outside [0, 1000000] (0 = one second's worth)", r.Burst)
		}
	}
	if c := s.Coalesce; c != nil {
		for i, k := range c.By {
			if len(k) > canonical.MaxKeyLen || !keyNameRE.MatchString(k) {
				p.add(fmt.Sprintf("spec.coalesce.by[%d]", i), "%q is not a business key name (lower_snake_case)", k)
			}
		}
		if !c.Enabled && len(c.By) > 0 {
			p.add("spec.coalesce.enabled", "by is set but coalescing is not enabled")
		}
	}
	if b := s.Batch; b != nil {
		if b.MaxEvents < 1 || b.MaxEvents > 10_000 {
			p.add("spec.batch.maxEvents", "%d is outside [1, 10000]", b.MaxEvents)
		}
		durIn(p, "spec.batch.maxWait", b.MaxWait, time.Minute)
	}
	if r := s.Retry; r != nil {
		if r.MaxAttempts < 0 || r.MaxAttempts > 1000 {
			p.add("spec.retry.maxAttempts", "%d is outside [1, 1000] (0 = default %d)", r.MaxAttempts, DefaultPolicy.MaxAttempts)
		}
		durIn(p, "spec.retry.initialBackoff", r.InitialBackoff, time.Hour)
		durIn(p, "spec.retry.maxBackoff", r.MaxBackoff, 24*time.Hour)
		if r.InitialBackoff != nil && r.MaxBackoff != nil && r.MaxBackoff.Duration < r.InitialBackoff.Duration {
			p.add("spec.retry.maxBackoff", "%s is less than initialBackoff %s", r.MaxBackoff.Duration, r.InitialBackoff.Duration)
		}
	}
	if c := s.CircuitBreaker; c != nil {
		if c.FailureThreshold < 0 || c.FailureThreshold > 10_000 {
			p.add("spec.circuitBreaker.failureThreshold", "%d is outside [1, 10000] (0 = default %d)", c.FailureThreshold, DefaultPolicy.FailureThreshold)
		}
		durIn(p, "spec.circuitBreaker.cooldown", c.Cooldown, time.Hour)
	}
}

func durIn(p *problems, path string, d *Duration, max time.Duration) {
	if d != nil && (d.Duration <= 0 || d.Duration > max) {
		p.add(path, "%s is outside (0, %s]", d.Duration, max)
	}
}

// globMatch matches s against a pattern where * is any run of characters and ? one
// character; a pattern without them must equal s.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// CheckWebhookTargets checks the host of every webhook Destination's url in docs with
// check (the control plane's address policy: non-public addresses are refused unless
// the server allows them with --webhook-allow). The server runs it on every document it
// is asked to write; Parse cannot, as the policy is the server's setting. Each refusal is
// a FieldError on spec.url.
func CheckWebhookTargets(docs []*Document, check func(host string) error) error {
	var errs []*FieldError
	for _, d := range docs {
		if d.Destination == nil || d.Destination.Type != DestinationWebhook {
			continue
		}
		u, err := url.Parse(d.Destination.URL)
		if err != nil || u.Hostname() == "" {
			continue // Parse refused it already
		}
		if err := check(u.Hostname()); err != nil {
			errs = append(errs, &FieldError{Doc: d.Ref(), Path: "spec.url", Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}
