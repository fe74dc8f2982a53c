package cliconfig

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// downNodes is a RoundTripper standing in for the network (fault injection): a request
// to a host in down fails as a refused TCP connect; any other host answers 200 with
// the request's body. It records the hosts asked.
type downNodes struct {
	down  map[string]bool
	asked []string
	// readFirst makes a down node read a byte of the body before failing.
	readFirst bool
}

func (d *downNodes) RoundTrip(r *http.Request) (*http.Response, error) {
	d.asked = append(d.asked, r.URL.Host)
	if d.down[r.URL.Host] {
		if r.Body != nil {
			if d.readFirst {
				r.Body.Read(make([]byte, 1))
			}
			r.Body.Close() // as net/http does on every error
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(string(body))), Header: http.Header{}}, nil
}

// TestFailover checks the CLI's client moves to the next node only when a node cannot
// be reached, keeps the body, sticks to the node that answered, does not send a
// stream's unreplayable body twice, and names the config file when no node answers.
func TestFailover(t *testing.T) {
	net := &downNodes{down: map[string]bool{"a:1": true}}
	f := &Failover{Servers: []string{"a:1", "b:1", "c:1"}, ConfigPath: "/etc/cd.yaml", Next: net}

	req, _ := http.NewRequest("POST", "https://a:1/x", strings.NewReader("payload"))
	res, err := f.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); string(b) != "payload" {
		t.Fatalf("the node tried second got body %q, want the request's", b)
	}
	if strings.Join(net.asked, ",") != "a:1,b:1" {
		t.Fatalf("asked %v, want a:1 then b:1", net.asked)
	}

	// The next request starts with the node that answered.
	net.asked = nil
	req, _ = http.NewRequest("POST", "https://a:1/x", strings.NewReader("again"))
	if _, err := f.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if strings.Join(net.asked, ",") != "b:1" {
		t.Fatalf("asked %v, want b:1 only", net.asked)
	}

	// A redirect to the leader (a request to another host) that succeeds does not
	// change where requests to the cluster start.
	net.asked = nil
	req, _ = http.NewRequest("GET", "https://c:1/x", nil)
	if _, err := f.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("GET", "https://a:1/x", nil)
	if _, err := f.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if strings.Join(net.asked, ",") != "c:1,b:1" {
		t.Fatalf("asked %v, want c:1 (the redirect) then b:1 (still the node that answered)", net.asked)
	}

	// A stream's body (no GetBody) goes to the next node when the first could not be
	// reached (nothing was read from it), and is closed once.
	net.asked, net.down["b:1"] = nil, true
	body := &closeCount{Reader: strings.NewReader("stream")}
	req, _ = http.NewRequest("POST", "https://a:1/x", body)
	req.GetBody = nil
	res, err = f.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); string(b) != "stream" || strings.Join(net.asked, ",") != "b:1,c:1" {
		t.Fatalf("a stream went to %v and arrived as %q; want b:1 (down) then c:1 with its body", net.asked, b)
	}
	if body.closes != 0 {
		t.Fatalf("the stream's body was closed %d times before the transport was done with it", body.closes)
	}

	// A stream's body that a failed attempt read from is not sent again.
	net.asked, net.readFirst = nil, true
	f.good.Store(nil)
	body = &closeCount{Reader: strings.NewReader("stream")}
	req, _ = http.NewRequest("POST", "https://a:1/x", body)
	req.GetBody = nil
	if _, err := f.RoundTrip(req); err == nil {
		t.Fatal("a stream read by a failed attempt was sent on")
	}
	if len(net.asked) != 1 || body.closes != 1 {
		t.Fatalf("a stream read by a failed attempt: asked %v, closed %d times; want one node, closed once", net.asked, body.closes)
	}
	net.readFirst = false

	// All down: the error names every node and the config.
	net.asked, net.down["c:1"] = nil, true
	req, _ = http.NewRequest("GET", "https://a:1/x", nil)
	_, err = f.RoundTrip(req)
	var ce *ConnectError
	if !errors.As(err, &ce) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want a ConnectError wrapping connection refused", err)
	}
	for _, want := range []string{"a:1", "b:1", "c:1", "/etc/cd.yaml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

type closeCount struct {
	io.Reader
	closes int
}

func (c *closeCount) Close() error { c.closes++; return nil }

func TestServers(t *testing.T) {
	c := &Config{Addr: "a:1", Addrs: []string{"b:1", "a:1", "", "c:1"}}
	if got := strings.Join(c.Servers(), ","); got != "a:1,b:1,c:1" {
		t.Fatalf("Servers() = %s", got)
	}
}
