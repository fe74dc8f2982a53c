package tryton

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeResponse(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		body    string
		result  string
		isFault *Fault
		errIs   error
		errHas  string
	}{
		{name: "result", status: 200, body: `{"id":1,"result":[1,"abc"]}`, result: `[1,"abc"]`},
		{name: "null result", status: 200, body: `{"id":1,"result":null}`, result: `null`},
		{name: "user error", status: 200,
			body:    `{"id":1,"error":["UserError",["The value for field \"Product\" is not valid.","a description",[]]]}`,
			isFault: &Fault{Method: "m", Type: "UserError", Message: `The value for field "Product" is not valid.`, Description: "a description"}},
		{name: "internal error", status: 200, body: `{"id":1,"error":["division by zero","Traceback (most recent call last):\n  File x"]}`,
			isFault: &Fault{Method: "m", Type: "division by zero", Message: "Traceback (most recent call last):\n  File x"}},
		{name: "access error", status: 200, body: `{"id":1,"error":["AccessError",["You are not allowed to read records \"Sale\".",""]]}`,
			isFault: &Fault{Method: "m", Type: "AccessError", Message: `You are not allowed to read records "Sale".`}},
		{name: "unauthorized", status: 401, body: `<html>401 Unauthorized</html>`, errIs: ErrAuth},
		{name: "forbidden", status: 403, body: ``, errIs: ErrAuth},
		{name: "rate limited", status: 429, body: ``, errHas: "too many login attempts"},
		{name: "server error", status: 500, body: `<h1>Internal Server Error</h1>`, errIs: ErrProtocol, errHas: "HTTP 500"},
		{name: "not json", status: 200, body: `<html>`, errIs: ErrProtocol},
		{name: "no result", status: 200, body: `{"id":1}`, errIs: ErrProtocol, errHas: "neither result nor error"},
		{name: "odd error member", status: 200, body: `{"id":1,"error":{"x":1}}`, errIs: ErrProtocol, errHas: "malformed error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := decodeResponse("m", c.status, []byte(c.body))
			switch {
			case c.isFault != nil:
				var f *Fault
				if !errors.As(err, &f) {
					t.Fatalf("err = %v, want a *Fault", err)
				}
				if *f != *c.isFault {
					t.Fatalf("fault = %+v, want %+v", *f, *c.isFault)
				}
				if strings.Contains(f.Error(), "\n") {
					t.Fatalf("Error() spans lines: %q", f.Error())
				}
			case c.errIs != nil || c.errHas != "":
				if err == nil {
					t.Fatalf("err = nil, result %s", res)
				}
				if c.errIs != nil && !errors.Is(err, c.errIs) {
					t.Fatalf("err = %v, want %v", err, c.errIs)
				}
				if !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("err = %v, want it to mention %q", err, c.errHas)
				}
			default:
				if err != nil || string(res) != c.result {
					t.Fatalf("got %s, %v; want %s", res, err, c.result)
				}
			}
		})
	}
}

func TestFaultUserFault(t *testing.T) {
	if !(&Fault{Type: "UserError"}).UserFault() || (&Fault{Type: "ConcurrencyException"}).UserFault() {
		t.Fatal("UserError must be a user fault, ConcurrencyException not")
	}
}

func TestValues(t *testing.T) {
	var row struct {
		At    tdatetime `json:"at"`
		Never tdatetime `json:"never"`
		Qty   tnumber   `json:"qty"`
		Tiny  tnumber   `json:"tiny"`
		Money tnumber   `json:"money"`
		Ok    tbool     `json:"ok"`
		Code  tstring   `json:"code"`
		Ref   ref       `json:"ref"`
	}
	in := `{"at":{"__class__":"datetime","year":2026,"month":11,"day":27,"hour":5,"minute":25,"second":50,"microsecond":354155},
		"never":null,"qty":5.0,"tiny":1e-05,"money":{"__class__":"Decimal","decimal":"10.50"},"ok":1,"code":false,"ref":null}`
	if err := json.Unmarshal([]byte(in), &row); err != nil {
		t.Fatal(err)
	}
	if got := row.At.UTC().Format("2006-01-02T15:04:05.000000"); got != "2026-11-27T05:25:50.354155" {
		t.Errorf("at = %s", got)
	}
	if !row.Never.IsZero() || row.Qty != "5" || row.Tiny != "0.00001" || row.Money != "10.50" || !bool(row.Ok) || row.Code != "" || row.Ref != 0 {
		t.Errorf("decoded %+v", row)
	}
	for _, bad := range []string{`{"at":{"__class__":"datetime","year":0}}`, `{"qty":"x"}`, `{"money":{"__class__":"Decimal","decimal":"1e999"}}`, `{"ok":"yes"}`} {
		if err := json.Unmarshal([]byte(bad), &row); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
	for _, c := range [][3]string{{"10", "4", "6"}, {"0.3", "0.1", "0.2"}, {"1", "1", "0"}, {"2", "2.5", "-0.5"}, {"x", "1", ""}} {
		if got := subtract(c[0], c[1]); got != c[2] {
			t.Errorf("subtract(%s, %s) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
	// A datetime round-trips through the domain encoding.
	b, _ := json.Marshal(datetimeArg(row.At.Time))
	var back tdatetime
	if err := json.Unmarshal(b, &back); err != nil || !back.Equal(row.At.Time) {
		t.Fatalf("round trip %s → %v, %v", b, back, err)
	}
}

// FuzzDecodeResponse feeds arbitrary answers to the decoder and to the row types the
// source and sink decode results into. Oracle (expectResponse, a reference reading of
// the JSON-RPC envelope): an answer is a result exactly when it is a JSON object whose
// "error" member is absent or null and that has a "result" member, and the result is
// that member's bytes; any other answer is a *Fault or an error wrapping ErrProtocol.
// An HTTP status other than 200 is always an error.
func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"id":1,"result":[{"id":1,"write_date":null,"create_date":{"__class__":"datetime","year":2026,"month":1,"day":2,"hour":0,"minute":0,"second":0,"microsecond":0},"product":3}]}`))
	f.Add([]byte(`{"id":1,"error":["UserError",["msg","desc",[]]]}`))
	f.Add([]byte(`{"id":1,"error":null,"result":null}`))
	f.Add([]byte(`{"id":1,"result":1,"error":"x","error":null}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`[1]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := decodeResponse("m", 502, body); !errors.Is(err, ErrProtocol) {
			t.Fatalf("HTTP 502 gave %v, want an error wrapping ErrProtocol", err)
		}
		res, err := decodeResponse("m", 200, body)
		want, isResult, judged := expectResponse(body)
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
		if judged {
			switch {
			case isResult && err != nil:
				t.Fatalf("%s: error %v, want the result %s", body, err, want)
			case isResult && !bytes.Equal(res, want):
				t.Fatalf("%s: result %s, want %s", body, res, want)
			case !isResult && err == nil:
				t.Fatalf("%s: result %s, want an error", body, res)
			}
		}
		if err != nil {
			var fault *Fault
			if !errors.As(err, &fault) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("%s: error %v is neither a *Fault nor ErrProtocol", body, err)
			}
			return
		}
		var moves []moveRow
		_ = json.Unmarshal(res, &moves)
		var sales []saleRow
		_ = json.Unmarshal(res, &sales)
		var prods []productRow
		_ = json.Unmarshal(res, &prods)
	})
}

// expectResponse reads a JSON-RPC answer the plain way: the members of the top-level
// object in order, the last of a name winning. judged is false for the answers it does
// not rule on: members whose names match "id", "result" or "error" only ignoring case
// (encoding/json's folding rules are its own).
func expectResponse(body []byte) (result []byte, isResult, judged bool) {
	if !json.Valid(body) {
		return nil, false, true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, false, true
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, false, true // null, a list, a string...: not an answer
	}
	var res, fault json.RawMessage
	hasResult := false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false, false
		}
		name := k.(string)
		switch name {
		case "result":
			res, hasResult = v, true
		case "error":
			fault = v
		case "id":
		default:
			for _, m := range []string{"id", "result", "error"} {
				if strings.EqualFold(name, m) || strings.EqualFold(strings.ToLower(name), m) {
					return nil, false, false
				}
			}
		}
	}
	if fault != nil && string(fault) != "null" {
		return nil, false, true
	}
	return res, hasResult, true
}
