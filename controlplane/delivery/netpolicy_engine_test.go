package delivery_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crossdock/crossdock/controlplane/controlplanetest"
	"github.com/crossdock/crossdock/controlplane/delivery"
	"github.com/crossdock/crossdock/controlplane/ledger"
	"github.com/crossdock/crossdock/controlplane/routing"
)

// counting is a receiver on ip that counts the requests it gets and answers with h
// (204 when nil).
type counting struct {
	url  string
	port string
	hits atomic.Int64
}

func countingServer(t *testing.T, ip string, h http.HandlerFunc) *counting {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	c := &counting{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/in"
	_, c.port, _ = net.SplitHostPort(ln.Addr().String())
	return c
}

// fakeDNS is fault injection: a DNS server on loopback that answers names with the
// given addresses, as a name an attacker controls does when it is rebound to an
// internal address. The returned resolver asks only it.
func fakeDNS(t *testing.T, names map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], names); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// dnsAnswer answers one A or AAAA question (RFC 1035 4.1): the header and question
// copied, one answer per address of the asked family, NXDOMAIN for unknown names.
func dnsAnswer(q []byte, names map[string][]netip.Addr) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, strings.ToLower(string(q[i+1:i+1+l])))
		i += 1 + l
	}
	i++ // the root label
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i : i+2])
	question := q[12 : i+4]
	addrs, known := names[strings.Join(labels, ".")]
	var answers [][]byte
	for _, a := range addrs {
		if (qtype == 1 && a.Is4()) || (qtype == 28 && !a.Is4()) {
			answers = append(answers, a.AsSlice())
		}
	}
	flags := uint16(0x8000|0x0400|0x0080) | binary.BigEndian.Uint16(q[2:4])&0x0100 // response, authoritative, RA, RD as asked
	if !known {
		flags |= 3 // NXDOMAIN
	}
	out := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q[0:2]))
	out = binary.BigEndian.AppendUint16(out, flags)
	out = binary.BigEndian.AppendUint16(out, 1)
	out = binary.BigEndian.AppendUint16(out, uint16(len(answers)))
	out = binary.BigEndian.AppendUint16(out, 0)
	out = binary.BigEndian.AppendUint16(out, 0)
	out = append(out, question...)
	for _, rdata := range answers {
		out = append(out, 0xc0, 12) // the name: a pointer to the question's
		out = binary.BigEndian.AppendUint16(out, qtype)
		out = binary.BigEndian.AppendUint16(out, 1) // IN
		out = binary.BigEndian.AppendUint32(out, 0) // TTL
		out = binary.BigEndian.AppendUint16(out, uint16(len(rdata)))
		out = append(out, rdata...)
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// The fake resolver works: the name resolves to what the test says.
func TestFakeDNS(t *testing.T) {
	r := fakeDNS(t, map[string][]netip.Addr{"shop.rebind.test": addrs("127.0.0.1", "::1")})
	got, err := r.LookupNetIP(context.Background(), "ip", "shop.rebind.test")
	if err != nil || len(got) != 2 {
		t.Fatalf("lookup: %v %v", got, err)
	}
	if _, err := r.LookupNetIP(context.Background(), "ip", "nothing.rebind.test"); err == nil {
		t.Fatal("an unknown name resolved")
	}
}

// A host name that passes the apply-time check but resolves to a loopback address is
// refused on connect, after DNS: nothing reaches the server, the message is retried and
// then dead-lettered with the reason and no response.
func TestWebhookBlockedAfterDNS(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	recv := countingServer(t, "127.0.0.1", nil)
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: "http://shop.rebind.test:" + recv.port + "/in", Secret: testSecret,
			Policy: routing.Policy{MaxAttempts: 2, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}}},
		Routes: []delivery.Route{stockRoute("stock", "shop")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond})
	delivery.UseResolver(e, fakeDNS(t, map[string][]netip.Addr{"shop.rebind.test": addrs("127.0.0.1")}))
	runEngineWith(t, e)
	newSource(t).commit(srv.Store(), level{"A", "1"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)

	const blocked = "blocked: 127.0.0.1 is a loopback address (allow it with --webhook-allow)"
	dls, err := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"})
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters %v, %v; want 1", dls, err)
	}
	if got := dls[0].GetError(); got != "gave up after 2 attempts: "+blocked {
		t.Errorf("dead letter error %q", got)
	}
	for _, a := range dls[0].GetAttempts() {
		if a.GetStatus() != 0 || a.GetResponse() != "" || a.GetError() != blocked {
			t.Errorf("attempt: status %d, response %q, error %q", a.GetStatus(), a.GetResponse(), a.GetError())
		}
	}
	if st, err := e.Status(); err != nil || len(st) != 1 || st[0].LastError != blocked {
		t.Errorf("status %+v, %v; want last error %q", st, err, blocked)
	}
	if n := recv.hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}
}

// An allow-list lets its CIDR through and nothing else: 127.0.0.1/32 reaches a server
// on 127.0.0.1, but not one on 127.0.0.2, whether the name resolves to that address or
// to its IPv4-mapped IPv6 form.
func TestWebhookAllowListOnlyItsCIDR(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	in := countingServer(t, "127.0.0.1", nil)
	out := countingServer(t, "127.0.0.2", nil)
	pol := routing.Policy{MaxAttempts: 1}
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{
			{Name: "in", Kind: delivery.KindWebhook, URL: "http://in.rebind.test:" + in.port + "/in", Secret: testSecret, Policy: pol},
			{Name: "out", Kind: delivery.KindWebhook, URL: "http://out.rebind.test:" + out.port + "/in", Secret: testSecret, Policy: pol},
			{Name: "mapped", Kind: delivery.KindWebhook, URL: "http://mapped.rebind.test:" + out.port + "/in", Secret: testSecret, Policy: pol},
		},
		Routes: []delivery.Route{stockRoute("stock", "in", "out", "mapped")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond, AddressPolicy: allowLoopback(t)})
	delivery.UseResolver(e, fakeDNS(t, map[string][]netip.Addr{
		"in.rebind.test": addrs("127.0.0.1"), "out.rebind.test": addrs("127.0.0.2"), "mapped.rebind.test": addrs("::ffff:127.0.0.2"),
	}))
	runEngineWith(t, e)
	newSource(t).commit(srv.Store(), level{"A", "1"}, level{"B", "2"})
	l := srv.Store().Ledger()
	for _, d := range []string{"in", "out", "mapped"} {
		waitCursor(t, l, d, 30*time.Second)
	}
	if n := in.hits.Load(); n != 2 {
		t.Errorf("the allowed server got %d requests, want 2", n)
	}
	if n := out.hits.Load(); n != 0 {
		t.Errorf("the server outside the allow-list got %d requests", n)
	}
	for _, d := range []string{"out", "mapped"} {
		dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: d})
		if len(dls) != 2 {
			t.Fatalf("%s: %d dead letters, want 2", d, len(dls))
		}
		for _, dl := range dls {
			if !strings.HasSuffix(dl.GetError(), "blocked: 127.0.0.2 is a loopback address (allow it with --webhook-allow)") {
				t.Errorf("%s: dead letter error %q", d, dl.GetError())
			}
		}
	}
	if dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "in"}); len(dls) != 0 {
		t.Errorf("allowed destination dead-lettered %d", len(dls))
	}
}

// Redirects are not followed: a redirect to an internal address is a refusal, and the
// internal server gets nothing.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	internal := countingServer(t, "127.0.0.2", nil)
	front := countingServer(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.url, http.StatusTemporaryRedirect)
	})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: front.url, Secret: testSecret}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	runEngine(t, srv.Store(), plan)
	newSource(t).commit(srv.Store(), level{"A", "1"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"})
	if len(dls) != 1 || !strings.HasPrefix(dls[0].GetError(), "HTTP 307 Temporary Redirect (redirects are not followed") {
		t.Fatalf("dead letters %v, want one refused with HTTP 307", dls)
	}
	if strings.Contains(dls[0].GetError(), "127.0.0.2") {
		t.Errorf("the error quotes the redirect target: %q", dls[0].GetError())
	}
	if front.hits.Load() != 1 || internal.hits.Load() != 0 {
		t.Fatalf("front got %d requests, internal %d; want 1 and 0", front.hits.Load(), internal.hits.Load())
	}
}

// A destination whose URL is a literal internal address (stored before the policy, or
// on a node with another allow-list) is not started: status says why, nothing is sent
// and nothing dead-lettered; its events wait at the cursor.
func TestWebhookLiteralInternalAddressWaits(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	recv := countingServer(t, "127.0.0.1", nil)
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: recv.url, Secret: testSecret}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	e := delivery.New(delivery.Config{Store: srv.Store(), Plans: delivery.StaticPlan{P: plan}, Logger: controlplanetest.Logger(t), Poll: 50 * time.Millisecond})
	runEngineWith(t, e)
	newSource(t).commit(srv.Store(), level{"A", "1"})
	want := "destinations/shop: spec.url: blocked: 127.0.0.1 is a loopback address; webhooks reach only public addresses unless every control plane node is started with --webhook-allow 127.0.0.1/32"
	var last string
	controlplanetest.WaitFor(t, 10*time.Second, "status to say the destination is blocked", func() bool {
		st, err := e.Status()
		if err != nil || len(st) != 1 {
			return false
		}
		last = st[0].LastError
		return strings.HasPrefix(last, want) && !st[0].Active
	})
	l := srv.Store().Ledger()
	if c, _, _ := l.DeliveryCursor("shop"); c.GetSeq() > 1 {
		t.Errorf("cursor moved to %d", c.GetSeq())
	}
	if dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"}); len(dls) != 0 {
		t.Errorf("%d dead letters", len(dls))
	}
	if n := recv.hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests (status: %q)", n, last)
	}
}

// A refusal's response is kept short and printable: at most 256 bytes, control
// characters replaced, in the attempt and in the error shown by dlq ls, status and logs.
func TestWebhookErrorKeepsShortPrintableBody(t *testing.T) {
	srv := controlplanetest.TestServer(t, nil)
	body := "unknown sku A\x1b[31m\x00\r\n\t" + strings.Repeat("x", 300) + "INTERNAL-TAIL"
	recv := countingServer(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(body))
	})
	plan := &delivery.Plan{Version: "1",
		Destinations: []delivery.Destination{{Name: "shop", Kind: delivery.KindWebhook, URL: recv.url, Secret: testSecret}},
		Routes:       []delivery.Route{stockRoute("stock", "shop")},
	}
	e := runEngine(t, srv.Store(), plan)
	newSource(t).commit(srv.Store(), level{"A", "1"})
	l := srv.Store().Ledger()
	waitCursor(t, l, "shop", 30*time.Second)
	dls, _ := l.DeadLetters(ledger.DeadLetterFilter{Destination: "shop"})
	if len(dls) != 1 || len(dls[0].GetAttempts()) != 1 {
		t.Fatalf("dead letters %v, want one with one attempt", dls)
	}
	st, err := e.Status()
	if err != nil || len(st) != 1 {
		t.Fatal(st, err)
	}
	const prefix = "HTTP 422 Unprocessable Entity: unknown sku A?[31m? xxx"
	for what, s := range map[string]string{"dead letter error": dls[0].GetError(), "attempt error": dls[0].GetAttempts()[0].GetError(), "status last error": st[0].LastError} {
		if !strings.HasPrefix(s, prefix) || !strings.HasSuffix(s, "x...") {
			t.Errorf("%s %q, want %q then the body's first 256 bytes", what, s, prefix)
		}
		if len(s) > len("HTTP 422 Unprocessable Entity: ")+256+len("...") {
			t.Errorf("%s is %d bytes", what, len(s))
		}
	}
	for what, s := range map[string]string{"dead letter error": dls[0].GetError(), "attempt response": dls[0].GetAttempts()[0].GetResponse()} {
		if strings.Contains(s, "INTERNAL-TAIL") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("%s keeps more than 256 printable bytes: %q", what, s)
		}
	}
	if resp := dls[0].GetAttempts()[0].GetResponse(); len(resp) > 256+len("...") || !strings.HasPrefix(resp, "unknown sku A?[31m?") {
		t.Errorf("attempt response %d bytes: %q", len(resp), resp)
	}
}
