package tryton

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/crossdock/crossdock/plugins/sdk"
)

func TestConfigure(t *testing.T) {
	c := New(nil)
	ok := `{"url":"http://erp:8000","database":"prod","user":"crossdock","password":"s3cret","locations":["WH"],"poll_interval":"2s"}`
	if err := c.Configure(context.Background(), []byte(ok)); err != nil {
		t.Fatal(err)
	}
	if c.cfg.pollInterval != 2*time.Second || c.cfg.lookback != 10*time.Second || c.cfg.PageSize != 500 || !*c.cfg.Inventory || !*c.cfg.Orders {
		t.Fatalf("defaults not applied: %+v", c.cfg)
	}
	if c.rpc.base != "http://erp:8000/prod/" {
		t.Fatalf("rpc base %q", c.rpc.base)
	}
	for in, field := range map[string]string{
		`{"database":"d","user":"u","password":"p"}`:                                          "url",
		`{"url":"ftp://x","database":"d","user":"u","password":"p"}`:                          "url",
		`{"url":"http://x","user":"u","password":"p"}`:                                        "database",
		`{"url":"http://x","database":"d","password":"p"}`:                                    "user",
		`{"url":"http://x","database":"d","user":"u"}`:                                        "password",
		`{"url":"http://x","database":"d","user":"u","password":"p","poll_interval":"soon"}`:  "poll_interval",
		`{"url":"http://x","database":"d","user":"u","password":"p","poll_interval":"1ns"}`:   "poll_interval",
		`{"url":"http://x","database":"d","user":"u","password":"p","page_size":0.5}`:         "page_size",
		`{"url":"http://x","database":"d","user":"u","password":"p","page_size":100000}`:      "page_size",
		`{"url":"http://x","database":"d","user":"u","password":"p","locations":["WH",""]}`:   "locations[1]",
		`{"url":"http://x","database":"d","user":"u","password":"p","colour":"blue"}`:         "settings",
		`{"url":"http://x","database":"d","user":"u","password":"p","locations":"WH"}`:        "locations",
		`{"url":"http://x","database":"d","user":"u","password":"p","lookback":"-1s"}`:        "lookback",
		`{"url":"http://x","database":"d","user":"u","password":"p","invoice_method":"x"}`:    "invoice_method",
		`{"url":"http://x","database":"d","user":"u","password":"p","confirm_partners":[""]}`: "confirm_partners[0]",
	} {
		err := New(nil).Configure(context.Background(), []byte(in))
		var ce *sdk.ConfigError
		if !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("Configure(%s) = %v, want a ConfigError on %q", in, err, field)
		}
	}
}
