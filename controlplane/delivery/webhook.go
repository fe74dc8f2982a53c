package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/crossdock/crossdock/internal/tracing"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	secretPrefix    = "whsec_"
)

// ParseSecret decodes a Standard Webhooks secret: "whsec_" followed by base64.
func ParseSecret(s string) ([]byte, error) {
	raw, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("webhook secret must start with %q followed by base64", secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("webhook secret after %q is not base64: %w", secretPrefix, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("webhook secret is %d bytes; use at least 16 (24 to 64 recommended)", len(key))
	}
	return key, nil
}

// Sign returns the webhook-signature value for a message: "v1," + base64 of
// HMAC-SHA256(key, id + "." + timestamp + "." + body).
func Sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// outcome classifies one attempt.
type outcome int

const (
	outcomeOK        outcome = iota
	outcomeRetry             // transient: 408, 5xx, transport error, timeout
	outcomeThrottled         // 429: pace, not a failure of the destination
	outcomePermanent         // other 4xx, 3xx: dead-letter at once
)

// String names the outcome in metrics.
func (o outcome) String() string {
	switch o {
	case outcomeOK:
		return "ok"
	case outcomeRetry:
		return "retry"
	case outcomeThrottled:
		return "throttled"
	case outcomePermanent:
		return "permanent"
	}
	return "unknown"
}

// attemptResult is what one request did.
type attemptResult struct {
	outcome    outcome
	status     int
	response   string
	err        string
	retryAfter time.Duration // from Retry-After on 429/503; 0 when absent
	took       time.Duration
}

// maxResponseKept is how much of a response body an attempt keeps (and an error
// quotes): the status line and a short reason are what an operator needs; more would
// copy the receiver's data into dead letters, status and logs.
const maxResponseKept = 256

// webhookClient sends signed requests.
type webhookClient struct {
	http *http.Client
	now  func() time.Time
}

// newHTTPClient returns the webhook client: connections checked by policy (see
// AddressPolicy.newTransport), redirects not followed. resolver may be nil.
func newHTTPClient(policy *AddressPolicy, resolver *net.Resolver) *http.Client {
	return &http.Client{
		Transport: policy.newTransport(resolver),
		// A webhook POST is not re-sent to another URL: a redirect is an answer (and
		// following it could lead anywhere, including an internal address).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// send POSTs body to dest, signed with key, and classifies the answer.
func (c *webhookClient) send(ctx context.Context, dest *Destination, key []byte, id string, body []byte) attemptResult {
	timeout := dest.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.URL, bytes.NewReader(body))
	if err != nil {
		return attemptResult{outcome: outcomePermanent, err: fmt.Sprintf("build request: %v", err)}
	}
	for k, v := range dest.Headers {
		req.Header.Set(k, v)
	}
	ts := c.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "crossdock-delivery/1")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(key, id, ts, body))
	if tracing.Enabled() {
		tracing.InjectHeader(ctx, req.Header) // traceparent: this attempt's span
	}
	resp, err := c.http.Do(req)
	took := time.Since(start)
	if err != nil {
		msg := err.Error()
		var blocked *BlockedError
		switch {
		case errors.As(err, &blocked):
			// Nothing was sent. Retried like any connection failure: the name may
			// resolve to a public address again, or the server be restarted with
			// --webhook-allow; the message waits, it is not dead-lettered at once.
			msg = blocked.Error()
		case errors.Is(err, context.DeadlineExceeded):
			msg = fmt.Sprintf("no answer within %s: %v", timeout, err)
		}
		return attemptResult{outcome: outcomeRetry, err: msg, took: took}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseKept+1))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	r := attemptResult{status: resp.StatusCode, response: printable(b, maxResponseKept), took: took}
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		r.outcome = outcomeOK
	case s == http.StatusTooManyRequests:
		r.outcome = outcomeThrottled
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	case s == http.StatusServiceUnavailable:
		r.outcome = outcomeRetry
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	case s == http.StatusRequestTimeout || s >= 500:
		r.outcome = outcomeRetry
	default:
		r.outcome = outcomePermanent
	}
	if r.outcome != outcomeOK {
		r.err = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if s := resp.StatusCode; s >= 300 && s < 400 {
			r.err += " (redirects are not followed: point the destination at the final URL)"
		} else if body := strings.TrimSpace(r.response); body != "" {
			r.err += ": " + body
		}
	}
	return r
}

// maxRetryAfter bounds how long one Retry-After may hold a message back.
const maxRetryAfter = 10 * time.Minute

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		d = time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// printable returns at most n bytes of b as text: invalid UTF-8, control and other
// unprintable characters become '?', runs of white space one space, and a cut is
// marked with "...".
func printable(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	var sb strings.Builder
	space := false
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if cut && !utf8.FullRune(b) {
			break // a rune cut by the limit
		}
		b = b[size:]
		switch {
		case unicode.IsSpace(r):
			if !space {
				sb.WriteByte(' ')
			}
			space = true
			continue
		case r == utf8.RuneError || !unicode.IsPrint(r):
			r = '?'
		}
		space = false
		sb.WriteRune(r)
	}
	if cut {
		sb.WriteString("...")
	}
	return sb.String()
}
