package edi

import (
	"testing"
)

// FuzzParseState: the connector's position (its committed state) never panics to
// parse; what parses encodes again to a state that parses the same.
func FuzzParseState(f *testing.F) {
	f.Add(``)
	f.Add(`{"v":1,"r":{"bigbox":102},"s":{"bigbox":[{"k":"4711","f":"0123456789abcdef","a":1,"t":1796375700,"d":true}]}}`)
	f.Add(`{"v":1,"r":null,"s":{"x":null}}`)
	f.Add(`not json`)
	f.Fuzz(func(t *testing.T, pos string) {
		st, err := parseState(pos)
		if err != nil {
			return
		}
		again, err := parseState(st.encode())
		if err != nil {
			t.Fatalf("re-encoded state does not parse: %v", err)
		}
		if again.encode() != st.encode() {
			t.Fatalf("state changes on a round trip: %s vs %s", st.encode(), again.encode())
		}
		st.remember("p", seen{Control: "0001"}, 2)
		if st.find("p", "1") < 0 {
			t.Fatal("remembered interchange not found")
		}
	})
}
