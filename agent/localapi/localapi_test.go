package localapi

import (
	"net"
	"strings"
	"testing"
)

func TestAllowedHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:7480": true, "localhost:7480": true, "LocalHost:7480": true, "[::1]:7480": true, "127.0.0.2:7480": true,
		"127.0.0.1:7481": false, "127.0.0.1": false, "localhost": false, "evil.example:7480": false, "": false,
		"[fe80::1%lo]:7480": false, "10.0.0.1:7480": false, "localhost.evil.example:7480": false, "0.0.0.0:7480": false,
	} {
		if got := AllowedHost(host, "7480"); got != want {
			t.Errorf("AllowedHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// FuzzAllowedHost: an allowed Host is localhost or a loopback IP with the port.
func FuzzAllowedHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7480", "localhost:7480", "[::1]:7480", "evil.example:7480", "[::ffff:127.0.0.1]:7480", ":7480", "[%]:7480"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if !AllowedHost(host, "7480") {
			return
		}
		h, p, err := net.SplitHostPort(host)
		if err != nil || p != "7480" {
			t.Fatalf("allowed %q: port %q, %v", host, p, err)
		}
		if ip := net.ParseIP(h); !strings.EqualFold(h, "localhost") && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("allowed %q: %q is not a loopback name", host, h)
		}
	})
}
