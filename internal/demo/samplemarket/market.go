// Package samplemarket is a sample marketplace for demos and tests: an HTTP receiver of
// Standard Webhooks that verifies signatures, enforces a rate limit (429 with
// Retry-After), fails a configurable fraction of requests (5xx, hangs, 429), records
// every request with its arrival time, and keeps the latest quantity per SKU.
//
// A message is a JSON object with "sku" and "quantity" (a string or a number), or a
// JSON array of them (a batch).
package samplemarket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Market. Fractions are of all requests, drawn independently.
type Config struct {
	// Secret is the Standard Webhooks secret ("whsec_" + base64); requests with a
	// missing or wrong signature are answered 401.
	Secret string
	// RatePerSecond and Burst: requests beyond this token bucket get 429 with
	// Retry-After (RetryAfter, default 1s). 0 means no limit.
	RatePerSecond float64
	Burst         int
	RetryAfter    time.Duration
	// FailRate is the fraction answered 500/502/503.
	FailRate float64
	// HangRate is the fraction held for Hang (default 2s) before answering 504: half of
	// them are applied first (a lost answer), half are not.
	HangRate float64
	Hang     time.Duration
	// ThrottleRate is the fraction answered 429 with Retry-After: 1 regardless of rate.
	ThrottleRate float64
	// Reject, when set, may refuse a message for good: a status (4xx) and a reason.
	Reject func(m Message) (status int, reason string)
	// Seed makes the failures reproducible (0: random).
	Seed uint64
}

// Message is one inventory update as the market reads it.
type Message struct {
	SKU      string          `json:"sku"`
	Quantity json.RawMessage `json:"quantity"`
	// Raw is the whole object.
	Raw json.RawMessage `json:"-"`
}

// QuantityString is the quantity as text ("12" for both 12 and "12").
func (m Message) QuantityString() string {
	var s string
	if json.Unmarshal(m.Quantity, &s) == nil {
		return s
	}
	return string(m.Quantity)
}

// Request is one request the market received.
type Request struct {
	At          time.Time
	ID          string // webhook-id
	Timestamp   string
	Signature   string
	Body        []byte
	Status      int
	Reason      string
	Messages    []Message
	SignatureOK bool
	Applied     bool // its quantities were recorded
}

// Market is the receiver; it is an http.Handler.
type Market struct {
	cfg Config
	key []byte

	mu       sync.Mutex
	rng      *rand.Rand
	tokens   float64
	last     time.Time
	requests []Request
	qty      map[string]string
	seenIDs  map[string]int
}

// New returns a market.
func New(cfg Config) (*Market, error) {
	raw, ok := strings.CutPrefix(cfg.Secret, "whsec_")
	if !ok {
		return nil, fmt.Errorf("samplemarket: secret must start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("samplemarket: secret is not base64: %w", err)
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	if cfg.Hang <= 0 {
		cfg.Hang = 2 * time.Second
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Market{
		cfg: cfg, key: key, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		tokens: float64(cfg.Burst), last: time.Now(), qty: map[string]string{}, seenIDs: map[string]int{},
	}, nil
}

func (m *Market) verify(id, ts, sigs string, body []byte) bool {
	mac := hmac.New(sha256.New, m.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, ok := strings.CutPrefix(s, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(v)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// ServeHTTP receives one webhook.
func (m *Market) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	req := Request{At: now, ID: r.Header.Get("webhook-id"), Timestamp: r.Header.Get("webhook-timestamp"), Signature: r.Header.Get("webhook-signature"), Body: body}
	status, reason, hang, applyFirst, retryAfter := m.decide(&req, r, err)
	m.mu.Lock()
	if applyFirst {
		m.applyLocked(&req)
	}
	m.requests = append(m.requests, req)
	idx := len(m.requests) - 1
	m.mu.Unlock()
	if hang {
		select {
		case <-time.After(m.cfg.Hang):
		case <-r.Context().Done():
		}
	}
	m.mu.Lock()
	m.requests[idx].Status, m.requests[idx].Reason = status, reason
	m.mu.Unlock()
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	}
	if status >= 300 {
		http.Error(w, reason, status)
		return
	}
	w.WriteHeader(status)
}

// decide answers a request; the caller records it.
func (m *Market) decide(req *Request, r *http.Request, readErr error) (status int, reason string, hang, applyFirst bool, retryAfter time.Duration) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "POST only", false, false, 0
	}
	if readErr != nil {
		return http.StatusBadRequest, "read body: " + readErr.Error(), false, false, 0
	}
	req.SignatureOK = m.verify(req.ID, req.Timestamp, req.Signature, req.Body)
	if !req.SignatureOK {
		return http.StatusUnauthorized, "webhook-signature does not verify", false, false, 0
	}
	ts, err := strconv.ParseInt(req.Timestamp, 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
		return http.StatusUnauthorized, "webhook-timestamp missing or more than 5 minutes off", false, false, 0
	}
	msgs, err := parseMessages(req.Body)
	if err != nil {
		return http.StatusBadRequest, err.Error(), false, false, 0
	}
	req.Messages = msgs

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg.RatePerSecond > 0 {
		now := time.Now()
		m.tokens = min(float64(m.cfg.Burst), m.tokens+now.Sub(m.last).Seconds()*m.cfg.RatePerSecond)
		m.last = now
		if m.tokens < 1 {
			return http.StatusTooManyRequests, "rate limit exceeded", false, false, m.cfg.RetryAfter
		}
		m.tokens--
	}
	x := m.rng.Float64()
	switch {
	case x < m.cfg.FailRate:
		codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}
		return codes[m.rng.IntN(len(codes))], "injected failure", false, false, 0
	case x < m.cfg.FailRate+m.cfg.HangRate:
		return http.StatusGatewayTimeout, "injected hang", true, m.rng.IntN(2) == 0, 0
	case x < m.cfg.FailRate+m.cfg.HangRate+m.cfg.ThrottleRate:
		return http.StatusTooManyRequests, "injected throttle", false, false, time.Second
	}
	if m.cfg.Reject != nil {
		for _, msg := range msgs {
			if st, why := m.cfg.Reject(msg); st != 0 {
				return st, why, false, false, 0
			}
		}
	}
	m.applyLocked(req)
	return http.StatusOK, "", false, false, 0
}

func (m *Market) applyLocked(req *Request) {
	req.Applied = true
	m.seenIDs[req.ID]++
	for _, msg := range req.Messages {
		m.qty[msg.SKU] = msg.QuantityString()
	}
}

func parseMessages(body []byte) ([]Message, error) {
	var raws []json.RawMessage
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, fmt.Errorf("body is not a JSON array of messages: %w", err)
		}
	} else {
		raws = []json.RawMessage{body}
	}
	out := make([]Message, 0, len(raws))
	for i, raw := range raws {
		var msg Message
		if err := json.Unmarshal(raw, &msg); err != nil {
			return nil, fmt.Errorf("message %d is not a JSON object: %w", i, err)
		}
		if msg.SKU == "" || len(msg.Quantity) == 0 {
			return nil, fmt.Errorf("message %d needs \"sku\" and \"quantity\"", i)
		}
		msg.Raw = raw
		out = append(out, msg)
	}
	return out, nil
}

// Requests returns a copy of every request received, in arrival order.
func (m *Market) Requests() []Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Request(nil), m.requests...)
}

// Quantities returns the latest quantity per SKU.
func (m *Market) Quantities() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.qty))
	for k, v := range m.qty {
		out[k] = v
	}
	return out
}

// Stats counts requests by status and the distinct messages applied.
type Stats struct {
	Requests int
	ByStatus map[int]int
	Applied  int // requests whose quantities were recorded
	SKUs     int
}

// Stats summarises what the market received.
func (m *Market) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{Requests: len(m.requests), ByStatus: map[int]int{}, SKUs: len(m.qty)}
	for _, r := range m.requests {
		s.ByStatus[r.Status]++
		if r.Applied {
			s.Applied++
		}
	}
	return s
}
