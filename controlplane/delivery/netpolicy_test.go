package delivery_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/crossdock/crossdock/controlplane/delivery"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct{ ip, class string }{
		{"8.8.8.8", ""},
		{"93.184.215.14", ""},
		{"2606:4700:4700::1111", ""},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"10.0.0.1", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"172.32.0.1", ""},
		{"192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"100.127.255.255", "shared (carrier-grade NAT)"},
		{"100.128.0.1", ""},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"192.0.2.7", "documentation"},
		{"2001:db8::1", "documentation"},
		// IPv4-mapped IPv6 is its IPv4 form.
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:169.254.169.254", "link-local"},
		{"::ffff:10.1.2.3", "private"},
		{"::ffff:8.8.8.8", ""},
		// NAT64 and 6to4 reach the IPv4 address they carry.
		{"64:ff9b::7f00:1", "loopback"},
		{"64:ff9b::a9fe:a9fe", "link-local"},
		{"64:ff9b::808:808", ""},
		{"2002:0a00:0001::1", "private"},
		{"2002:0808:0808::1", ""},
		// IPv4-compatible (deprecated) and outside 2000::/3.
		{"::127.0.0.1", "reserved"},
		{"4000::1", "reserved"},
	} {
		if got := delivery.Classify(netip.MustParseAddr(tc.ip)); got != tc.class {
			t.Errorf("Classify(%s) = %q, want %q", tc.ip, got, tc.class)
		}
	}
}

func TestCheckAddrMessageAndAllowList(t *testing.T) {
	var deny *delivery.AddressPolicy // nil: public only
	err := deny.CheckAddr(netip.MustParseAddr("::ffff:127.0.0.1"))
	var b *delivery.BlockedError
	if !errors.As(err, &b) || err.Error() != "blocked: 127.0.0.1 is a loopback address (allow it with --webhook-allow)" {
		t.Fatalf("CheckAddr(::ffff:127.0.0.1) = %v", err)
	}
	if err := deny.CheckAddr(netip.MustParseAddr("169.254.169.254")); err == nil || err.Error() != "blocked: 169.254.169.254 is a link-local address (allow it with --webhook-allow)" {
		t.Fatalf("CheckAddr(169.254.169.254) = %v", err)
	}
	if err := deny.CheckAddr(netip.MustParseAddr("1.1.1.1")); err != nil {
		t.Fatalf("a public address was refused: %v", err)
	}

	allow, err := delivery.ParseAllowList([]string{"10.20.0.0/16", "127.0.0.1", "fd00:1::/32"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := delivery.NewAddressPolicy(allow)
	if err != nil {
		t.Fatal(err)
	}
	for ip, ok := range map[string]bool{
		"10.20.0.1": true, "10.20.255.255": true, "::ffff:10.20.3.4": true, "64:ff9b::a14:304": true,
		"10.21.0.1": false, "10.19.255.255": false, "10.0.0.1": false,
		"127.0.0.1": true, "::ffff:127.0.0.1": true, "127.0.0.2": false, "::1": false,
		"fd00:1::5": true, "fd00:2::5": false, "169.254.169.254": false, "8.8.8.8": true,
	} {
		if err := p.CheckAddr(netip.MustParseAddr(ip)); (err == nil) != ok {
			t.Errorf("allow %v: CheckAddr(%s) = %v, want allowed=%v", allow, ip, err, ok)
		}
	}
}

func TestParseAllowList(t *testing.T) {
	got, err := delivery.ParseAllowList([]string{"10.20.0.5/16", " 127.0.0.1 ", "::1", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[10.20.0.0/16 127.0.0.1/32 ::1/128 fd00::/8]"; fmt.Sprint(got) != want {
		t.Fatalf("ParseAllowList = %v, want %s", got, want)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "localhost", "10.0.0.0/8,192.168.0.0/16", "::ffff:10.0.0.0/104", "fe80::1%eth0"} {
		if _, err := delivery.ParseAllowList([]string{bad}); err == nil || !strings.Contains(err.Error(), "--webhook-allow") {
			t.Errorf("ParseAllowList(%q) = %v, want an error naming --webhook-allow", bad, err)
		}
	}
	if _, err := delivery.NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}); err == nil {
		t.Error("NewAddressPolicy took an IPv4-mapped prefix")
	}
}

// CheckHost is the apply-time check: literal addresses, loopback and site-internal
// names, numbers that some resolvers read as IPv4 addresses.
func TestCheckHost(t *testing.T) {
	var deny *delivery.AddressPolicy
	loop, _ := delivery.NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	corp, _ := delivery.NewAddressPolicy([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")})
	for _, tc := range []struct {
		host       string
		p          *delivery.AddressPolicy
		wantErr    string // "" = allowed
		policyName string
	}{
		{"hooks.example.com", deny, "", "deny"},
		{"93.184.215.14", deny, "", "deny"},
		{"169.254.169.254", deny, "blocked: 169.254.169.254 is a link-local address; webhooks reach only public addresses unless every control plane node is started with --webhook-allow 169.254.169.254/32", "deny"},
		{"::ffff:a9fe:a9fe", deny, "blocked: 169.254.169.254 is a link-local address", "deny"},
		{"[::1]", deny, "blocked: ::1 is a loopback address", "deny"},
		{"LOCALHOST.", deny, "blocked: LOCALHOST. is a loopback name", "deny"},
		{"api.localhost", deny, "loopback name", "deny"},
		{"ip6-localhost", deny, "loopback name", "deny"},
		{"metadata.google.internal", deny, "site-internal name (.internal)", "deny"},
		{"printer.local", deny, "site-internal name (.local)", "deny"},
		{"2130706433", deny, "is a number, not a name", "deny"},
		{"127.1", deny, "is a number, not a name", "deny"},
		{"0x7f.0x1", deny, "is a number, not a name", "deny"},
		{"localhost", loop, "", "loop"},
		{"127.0.0.1", loop, "", "loop"},
		{"127.0.0.2", loop, "blocked: 127.0.0.2 is a loopback address", "loop"},
		{"10.20.1.1", corp, "", "corp"},
		{"10.21.1.1", corp, "blocked: 10.21.1.1 is a private address", "corp"},
		{"localhost", corp, "loopback name", "corp"},
		{"erp.corp.internal", corp, "", "corp"}, // its addresses are checked on connect
	} {
		err := tc.p.CheckHost(tc.host)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: CheckHost(%q) = %v, want allowed", tc.policyName, tc.host, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: CheckHost(%q) = %v, want %q", tc.policyName, tc.host, err, tc.wantErr)
		}
	}
}

// FuzzAddressPolicy: parsing allow-lists and hosts never panics, an IPv4-mapped address
// is always judged as its IPv4 form, and an allowed prefix lets its own address through.
func FuzzAddressPolicy(f *testing.F) {
	for _, s := range [][2]string{
		{"127.0.0.1/32", "127.0.0.1"}, {"10.20.0.0/16", "::ffff:10.20.1.1"}, {"fd00::/8", "fd00::1"},
		{"::1", "localhost"}, {"", "169.254.169.254"}, {"0.0.0.0/0", "0x7f.1"}, {"64:ff9b::/96", "64:ff9b::a00:1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, allow, host string) {
		var list []string
		if allow != "" {
			list = strings.Split(allow, ",")
		}
		prefixes, err := delivery.ParseAllowList(list)
		if err != nil {
			return
		}
		p, err := delivery.NewAddressPolicy(prefixes)
		if err != nil {
			t.Fatalf("NewAddressPolicy refused what ParseAllowList returned (%v): %v", prefixes, err)
		}
		for _, pre := range prefixes {
			if err := p.CheckAddr(pre.Addr()); err != nil {
				t.Fatalf("allow %v refused its own address %s: %v", prefixes, pre.Addr(), err)
			}
		}
		_ = p.CheckHost(host)
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return
		}
		if ip.Is4() {
			mapped := netip.AddrFrom16(ip.As16())
			if delivery.Classify(mapped) != delivery.Classify(ip) {
				t.Fatalf("Classify(%s) = %q but Classify(%s) = %q", mapped, delivery.Classify(mapped), ip, delivery.Classify(ip))
			}
			if (p.CheckAddr(mapped) == nil) != (p.CheckAddr(ip) == nil) {
				t.Fatalf("CheckAddr differs for %s and %s", mapped, ip)
			}
		}
		if public, passes := delivery.Classify(ip) == "", (&delivery.AddressPolicy{}).CheckAddr(ip) == nil; public != passes {
			t.Fatalf("%s: public=%v but the default policy lets it through=%v", ip, public, passes)
		}
	})
}
