package samplemarket

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"
)

// Demo is a sample marketplace served on loopback for `crossdock demo`: it allows 50
// requests/s (burst 50), fails 2% of requests with a 5xx and holds 0.5% past the
// sender's timeout. GET / shows what it received.
type Demo struct {
	*Market
	URL    string
	Secret string
	srv    *http.Server
}

// NewSecret returns a fresh Standard Webhooks secret ("whsec_" + 24 random bytes).
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("samplemarket: secret: %w", err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// StartDemo serves a demo marketplace on addr (e.g. "127.0.0.1:0").
func StartDemo(addr string) (*Demo, error) {
	secret, err := NewSecret()
	if err != nil {
		return nil, err
	}
	m, err := New(Config{Secret: secret, RatePerSecond: 50, Burst: 50, RetryAfter: time.Second, FailRate: 0.02, HangRate: 0.005, Hang: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("samplemarket: listen on %s: %w", addr, err)
	}
	d := &Demo{Market: m, URL: "http://" + ln.Addr().String() + "/inventory", Secret: secret}
	mux := http.NewServeMux()
	mux.Handle("POST /inventory", m)
	mux.HandleFunc("GET /{$}", d.serveSummary)
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// Close stops the server.
func (d *Demo) Close() error { return d.srv.Close() }

// Documents are the routing documents that send the demo's inventory levels from
// WH-EAST to the marketplace: a Policy (40 requests/s, coalescing per SKU, retries,
// breaker), the webhook Destination, the Route with its CEL mapping, and an Alert on
// its error rate (the marketplace fails about 2.5% of requests: it fires).
func (d *Demo) Documents() string {
	return fmt.Sprintf(`apiVersion: crossdock.io/v1
kind: Policy
metadata: {name: demo-market-pace}
spec:
  rateLimit: {perSecond: 40, burst: 40}
  coalesce: {enabled: true, by: [sku]}
  retry: {maxAttempts: 8, initialBackoff: 200ms, maxBackoff: 10s}
  circuitBreaker: {failureThreshold: 10, cooldown: 5s}
---
apiVersion: crossdock.io/v1
kind: Destination
metadata: {name: demo-market}
spec:
  type: webhook
  url: %s
  secret: %s
  timeout: 1s
  policy: demo-market-pace
---
apiVersion: crossdock.io/v1
kind: Route
metadata: {name: demo-market-stock}
spec:
  destination: demo-market
  match:
    types: [inventory.level]
    keys: {location: WH-EAST}
  mapping: |
    {"sku": event.inventory_level.sku, "quantity": event.inventory_level.available}
---
apiVersion: crossdock.io/v1
kind: Alert
metadata: {name: demo-market-errors}
spec:
  condition: errorRate
  destinations: [demo-market]
  threshold: {errorRatio: 0.01, minAttempts: 50}
  window: 1m
`, d.URL, d.Secret)
}

// Summary is one line about what the marketplace received.
func (d *Demo) Summary() string {
	st := d.Stats()
	codes := make([]int, 0, len(st.ByStatus))
	for c := range st.ByStatus {
		if c != 0 { // 0: still being answered
			codes = append(codes, c)
		}
	}
	sort.Ints(codes)
	by := ""
	for _, c := range codes {
		by += fmt.Sprintf(" %d:%d", c, st.ByStatus[c])
	}
	return fmt.Sprintf("marketplace: %d requests (by status%s), %d SKUs at their latest quantity", st.Requests, by, st.SKUs)
}

func (d *Demo) serveSummary(w http.ResponseWriter, r *http.Request) {
	st := d.Stats()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"requests": st.Requests, "by_status": st.ByStatus, "skus": st.SKUs, "quantities": d.Quantities()})
}
