package delivery

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// AddressPolicy decides which addresses webhooks may reach: public unicast addresses,
// and non-public ones (loopback, private, link-local, ...) only inside a prefix the
// operator allowed (crossdock server --webhook-allow CIDR). It is checked when a
// Destination is applied (CheckHost: a literal IP or an obviously internal name) and on
// every connection the delivery engine opens, on the address it actually connects to
// after DNS resolution (so DNS rebinding cannot bypass it). An IPv4-mapped IPv6 address
// is judged as its IPv4 form. The zero value and nil allow only public addresses.
type AddressPolicy struct {
	allow []netip.Prefix
}

// NewAddressPolicy returns a policy that lets the non-public addresses inside allow
// through. A prefix written as an IPv4-mapped IPv6 address is refused: write it in its
// IPv4 form.
func NewAddressPolicy(allow []netip.Prefix) (*AddressPolicy, error) {
	p := &AddressPolicy{}
	for _, a := range allow {
		if !a.IsValid() {
			return nil, errors.New("webhook allow-list: invalid prefix")
		}
		if a.Addr().Is4In6() {
			return nil, fmt.Errorf("webhook allow-list: %s is an IPv4-mapped IPv6 prefix; write it as IPv4 (e.g. 10.0.0.0/8)", a)
		}
		p.allow = append(p.allow, a.Masked())
	}
	return p, nil
}

// ParseAllowList parses --webhook-allow values: CIDR prefixes (10.20.0.0/16, fd00::/8)
// or single addresses (127.0.0.1, ::1), which allow that address only.
func ParseAllowList(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		v = strings.TrimSpace(v)
		var p netip.Prefix
		if strings.Contains(v, "/") {
			var err error
			if p, err = netip.ParsePrefix(v); err != nil {
				return nil, fmt.Errorf("--webhook-allow %q: not a CIDR prefix (e.g. 10.20.0.0/16 or 127.0.0.1/32)", v)
			}
		} else {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("--webhook-allow %q: not a CIDR prefix or an IP address (e.g. 10.20.0.0/16 or 127.0.0.1)", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("--webhook-allow %q: an IPv4-mapped IPv6 address; write it as IPv4", v)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Allowed lists the allowed prefixes.
func (p *AddressPolicy) Allowed() []netip.Prefix {
	if p == nil {
		return nil
	}
	return append([]netip.Prefix(nil), p.allow...)
}

// BlockedError is a connection the policy refused: nothing was sent.
type BlockedError struct {
	Addr  netip.Addr
	Class string // "loopback", "private", "link-local", ...
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("blocked: %s is %s address (allow it with --webhook-allow)", e.Addr, article(e.Class))
}

func article(class string) string {
	switch class[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + class
	}
	return "a " + class
}

type classRange struct {
	prefix netip.Prefix
	class  string
}

func ranges(class string, prefixes ...string) []classRange {
	out := make([]classRange, len(prefixes))
	for i, s := range prefixes {
		out[i] = classRange{netip.MustParsePrefix(s), class}
	}
	return out
}

// nonPublic lists the special-purpose ranges (RFC 6890 and the IANA registries) a
// webhook may not reach by default, most specific first where they nest.
var nonPublic = concat(
	ranges("unspecified", "0.0.0.0/8", "::/128"),
	ranges("loopback", "127.0.0.0/8", "::1/128"),
	ranges("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10", "64:ff9b:1::/48"),
	ranges("shared (carrier-grade NAT)", "100.64.0.0/10"),
	ranges("link-local", "169.254.0.0/16", "fe80::/10"),
	ranges("multicast", "224.0.0.0/4", "ff00::/8"),
	ranges("documentation", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"),
	ranges("reserved", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "::/96", "100::/64"),
)

func concat(lists ...[]classRange) []classRange {
	var out []classRange
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	global6   = netip.MustParsePrefix("2000::/3")
)

// Classify says what kind of non-public address ip is ("loopback", "private", ...), or
// "" for a public unicast address. IPv4-mapped IPv6 addresses are classified as their
// IPv4 form; NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses by the IPv4 address
// they carry.
func Classify(ip netip.Addr) string {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return "invalid"
	}
	for _, r := range nonPublic {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	if ip.Is4() {
		return ""
	}
	if v4, ok := embeddedIPv4(ip); ok {
		return Classify(v4)
	}
	if !global6.Contains(ip) {
		return "reserved"
	}
	return ""
}

// embeddedIPv4 returns the IPv4 address a NAT64 or 6to4 address reaches.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// CheckAddr returns a *BlockedError when ip is not public and no allowed prefix holds
// it (or, for NAT64 and 6to4, the IPv4 address it carries).
func (p *AddressPolicy) CheckAddr(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	class := Classify(ip)
	if class == "" || p.allows(ip) {
		return nil
	}
	if v4, ok := embeddedIPv4(ip); ok && p.allows(v4) {
		return nil
	}
	return &BlockedError{Addr: ip, Class: class}
}

func (p *AddressPolicy) allows(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, a := range p.allow {
		if a.Contains(ip) {
			return true
		}
	}
	return false
}

// loopbackNames resolve to loopback addresses (RFC 6761 and common /etc/hosts names).
var loopbackNames = []string{"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

// internalSuffixes are names that only resolve inside a site: mDNS (.local), the
// private-use TLD (.internal, e.g. cloud metadata and VPC names) and home networks.
var internalSuffixes = []string{".local", ".internal", ".home.arpa", ".localdomain"}

// CheckHost is the apply-time check of a webhook URL's host: a literal IP is checked
// like a connection; a name that obviously resolves to a loopback address (localhost)
// is allowed only when the allow-list holds 127.0.0.1 or ::1, and a site-internal name
// (.internal, .local, .home.arpa) only when the allow-list is not empty. Any other name
// passes: its addresses are checked on every connection. The error says how to allow it.
func (p *AddressPolicy) CheckHost(host string) error {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	if h == "" {
		return errors.New("no host")
	}
	if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		err := p.CheckAddr(ip)
		var b *BlockedError
		if errors.As(err, &b) {
			return fmt.Errorf("blocked: %s is %s address; webhooks reach only public addresses unless every control plane node is started with --webhook-allow %s (or a CIDR that holds it)",
				b.Addr, article(b.Class), netip.PrefixFrom(b.Addr, b.Addr.BitLen()))
		}
		return err
	}
	if numericHost(h) {
		return fmt.Errorf("host %q is a number, not a name: write an IP address as 1.2.3.4 or [2001:db8::1]", host)
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || slices.Contains(loopbackNames, h) {
		if p.allows(netip.MustParseAddr("127.0.0.1")) || p.allows(netip.IPv6Loopback()) {
			return nil
		}
		return fmt.Errorf("blocked: %s is a loopback name; webhooks reach only public addresses unless every control plane node is started with --webhook-allow 127.0.0.1/32", host)
	}
	for _, s := range internalSuffixes {
		if strings.HasSuffix(h, s) && len(p.Allowed()) == 0 {
			return fmt.Errorf("blocked: %s is a site-internal name (%s); webhooks reach only public addresses unless every control plane node is started with --webhook-allow CIDR for the addresses it resolves to", host, s)
		}
	}
	return nil
}

// numericHost reports a host whose last label is a number (decimal, or 0x hex): no
// top-level domain is, but some resolvers read "127.1", "2130706433" or "0x7f.1" as
// IPv4 addresses.
func numericHost(h string) bool {
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(last, "0x"); ok {
		last = rest
		return strings.Trim(last, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// checkURL checks a webhook URL's host like CheckHost (the engine does, before it
// starts a destination stored before the policy existed or applied under another
// allow-list). A URL that does not parse passes: the request fails with the parse error.
func (p *AddressPolicy) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	return p.CheckHost(u.Hostname())
}

// control is the net.Dialer Control function: it runs after DNS resolution, on the
// address the socket is about to connect to.
func (p *AddressPolicy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook dial: cannot check address %q: %w", address, err)
	}
	return p.CheckAddr(ap.Addr())
}

// newTransport returns the webhook transport: every connection's address is checked by
// p; no proxy from the environment (a proxy would connect on our behalf, unchecked).
// resolver, when set, replaces the system's (tests).
func (p *AddressPolicy) newTransport(resolver *net.Resolver) *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control, Resolver: resolver}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = d.DialContext
	tr.MaxIdleConnsPerHost = 64
	return tr
}
