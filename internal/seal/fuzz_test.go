package seal

import "testing"

// FuzzParse feeds key files: Parse never panics, and a keyring it returns seals values
// it opens again.
func FuzzParse(f *testing.F) {
	f.Add([]byte("k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte("# c\n\nk2 " + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" + "\nk1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte("k1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kr, err := Parse(b)
		if err != nil {
			return
		}
		s := kr.Seal("p", b)
		got, err := kr.Open("p", s)
		if err != nil || string(got) != string(b) {
			t.Fatalf("round trip: %q, %v", got, err)
		}
	})
}

// FuzzOpen feeds sealed values: Open never panics and never opens a value it did not
// seal to something else.
func FuzzOpen(f *testing.F) {
	kr, err := Parse([]byte("k1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kr.Seal("p", []byte("whsec_x")))
	f.Add("sealed:v1:k1:")
	f.Add("sealed:v1::AAAA")
	f.Add("sealed:v1:k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := kr.Open("p", s)
		if err == nil && kr.Seal("p", b) != s {
			t.Fatalf("%q opened to %q, which seals to something else", s, b)
		}
	})
}
