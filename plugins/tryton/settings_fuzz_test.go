package tryton

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/crossdock/crossdock/plugins/sdk"
)

// FuzzParseSettings: any input gives settings or a *sdk.ConfigError naming a field.
// Oracle: accepted settings meet every rule the connector relies on (required fields,
// an http(s) URL with a host, durations at their minimums, a page size in range, both
// streams decided), and parsing them again after json.Marshal gives the same settings.
func FuzzParseSettings(f *testing.F) {
	f.Add([]byte(`{"url":"http://127.0.0.1:8000","database":"erp","user":"admin","password":"pw"}`))
	f.Add([]byte(`{"url":"https://tryton.example/","database":"erp","user":"u","password":"p","locations":["WH","STO"],"inventory":false,"poll_interval":"1s","lookback":"0s","page_size":10000,"timeout":"2s"}`))
	f.Add([]byte(`{"url":"ftp://x","database":"d","user":"u","password":"p"}`))
	f.Add([]byte(`{"url":"http://h","database":"d","user":"u","password":"p","page_size":0,"poll_interval":"1ms"}`))
	f.Add([]byte(`{"url":"http://h","database":"d","user":"u","password":"p","locations":[""]}`))
	f.Add([]byte(`{"port":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := parseSettings(raw)
		if err != nil {
			var ce *sdk.ConfigError
			if !errors.As(err, &ce) || ce.Field == "" || ce.Reason == "" {
				t.Fatalf("error %v is not a *sdk.ConfigError naming a field and a reason", err)
			}
			return
		}
		if s.URL == "" || s.Database == "" || s.User == "" || s.Password == "" {
			t.Fatalf("accepted %s without url, database, user or password", raw)
		}
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted url %q", s.URL)
		}
		for i, l := range s.Locations {
			if l == "" {
				t.Fatalf("accepted an empty location at %d", i)
			}
		}
		if s.Inventory == nil || s.Orders == nil {
			t.Fatalf("accepted %s leaving inventory or orders undecided", raw)
		}
		if s.pollInterval < 10*time.Millisecond || s.lookback < 0 || s.timeout < time.Millisecond {
			t.Fatalf("accepted durations poll %s lookback %s timeout %s", s.pollInterval, s.lookback, s.timeout)
		}
		if s.PageSize < 1 || s.PageSize > 10000 {
			t.Fatalf("accepted page size %d", s.PageSize)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseSettings(b)
		if err != nil {
			t.Fatalf("settings %s, marshalled from accepted input %s, refused: %v", b, raw, err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("round trip of %s: %+v, then %+v", raw, s, again)
		}
	})
}
