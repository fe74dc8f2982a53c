package samplemarket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func post(t *testing.T, url, id, body string, sign bool) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + body))
	sig := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !sign {
		sig = "v1,AAAA"
	}
	req.Header.Set("webhook-signature", "v1a,ignored "+sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestMarketVerifiesLimitsAndKeepsLatest(t *testing.T) {
	m, err := New(Config{Secret: secret, RatePerSecond: 0.001, Burst: 2, RetryAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	if r := post(t, srv.URL, "m1", `{"sku":"A","quantity":"5"}`, false); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d", r.StatusCode)
	}
	if r := post(t, srv.URL, "m2", `[{"sku":"A","quantity":"5"},{"sku":"B","quantity":7}]`, true); r.StatusCode != http.StatusOK {
		t.Fatalf("batch: %d", r.StatusCode)
	}
	if r := post(t, srv.URL, "m3", `{"sku":"A"}`, true); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("missing quantity: %d", r.StatusCode)
	}
	if r := post(t, srv.URL, "m4", `{"sku":"A","quantity":"6"}`, true); r.StatusCode != http.StatusOK {
		t.Fatalf("second: %d", r.StatusCode)
	}
	r := post(t, srv.URL, "m5", `{"sku":"A","quantity":"9"}`, true)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "3" {
		t.Fatalf("over the limit: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if q := m.Quantities(); q["A"] != "6" || q["B"] != "7" {
		t.Fatalf("quantities %v", q)
	}
	st := m.Stats()
	if st.Requests != 5 || st.ByStatus[200] != 2 || st.Applied != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func FuzzParseMessages(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, err := parseMessages(body)
		if err != nil {
			return
		}
		for _, m := range msgs {
			if m.SKU == "" || len(m.Quantity) == 0 {
				t.Fatalf("accepted a message without sku or quantity: %s", m.Raw)
			}
		}
	})
}

func TestDemoServesAndSummarises(t *testing.T) {
	d, err := StartDemo("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !strings.Contains(d.Documents(), d.URL) || !strings.Contains(d.Documents(), d.Secret) {
		t.Fatal("documents do not name the marketplace")
	}
	resp, err := http.Get(strings.TrimSuffix(d.URL, "inventory"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	if s := d.Summary(); !strings.Contains(s, "0 requests") {
		t.Fatalf("summary %q", s)
	}
}
