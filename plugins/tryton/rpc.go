package tryton

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors the client returns; Tryton's own faults are *Fault.
var (
	// ErrAuth means Tryton refused the user or password (HTTP 401/403 on login).
	ErrAuth = errors.New("tryton refused the login")
	// ErrProtocol means the answer was not a Tryton JSON-RPC response.
	ErrProtocol = errors.New("not a Tryton JSON-RPC response")
)

// maxResponse bounds one JSON-RPC answer read into memory.
const maxResponse = 64 << 20

// Fault is an error Tryton returned in the JSON-RPC "error" member: its exception class
// (UserError, AccessError, ConcurrencyException, ...) and message. Internal server
// errors carry the exception text as Type and the traceback as Message.
type Fault struct {
	Method      string
	Type        string
	Message     string
	Description string
}

func (f *Fault) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tryton %s: %s", f.Method, f.Type)
	if f.Message != "" {
		b.WriteString(": " + firstLine(f.Message))
	}
	if f.Description != "" {
		b.WriteString(" (" + firstLine(f.Description) + ")")
	}
	return b.String()
}

// UserFault says whether Tryton rejected the data itself (a validation or access
// error), which a retry with the same data cannot fix.
func (f *Fault) UserFault() bool {
	switch f.Type {
	case "UserError", "AccessError", "DomainValidationError", "RequiredValidationError",
		"SizeValidationError", "DigitsValidationError", "SelectionValidationError",
		"TimeFormatValidationError", "ForeignKeyError", "SQLConstraintError",
		"RecursionError", "ImportDataError":
		return true
	}
	return false
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

type rpcRequest struct {
	ID     uint64 `json:"id"`
	Method string `json:"method"`
	Params []any  `json:"params"`
}

// decodeResponse turns an HTTP answer from Tryton into the JSON of the result or an
// error: a *Fault for Tryton's own errors, ErrAuth for a refused session, and an
// ErrProtocol-wrapped error for anything else.
func decodeResponse(method string, status int, body []byte) (json.RawMessage, error) {
	switch status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w (HTTP %d on %s)", ErrAuth, status, method)
	case http.StatusTooManyRequests:
		return nil, fmt.Errorf("tryton %s: too many login attempts (HTTP 429), retry later", method)
	default:
		return nil, fmt.Errorf("%w: HTTP %d on %s: %s", ErrProtocol, status, method, firstLine(string(body)))
	}
	var resp struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrProtocol, method, err)
	}
	if len(resp.Error) > 0 && !bytes.Equal(resp.Error, []byte("null")) {
		return nil, decodeFault(method, resp.Error)
	}
	if resp.Result == nil {
		return nil, fmt.Errorf("%w: %s: neither result nor error", ErrProtocol, method)
	}
	return resp.Result, nil
}

// decodeFault reads Tryton's error member: [type, args], where args is a list whose
// first elements are the message and the description (UserError, AccessError), or a
// string (an internal error's traceback).
func decodeFault(method string, raw json.RawMessage) error {
	f := &Fault{Method: method}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) == 0 {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			f.Type = s
			return f
		}
		return fmt.Errorf("%w: %s: malformed error member %s", ErrProtocol, method, firstLine(string(raw)))
	}
	if err := json.Unmarshal(parts[0], &f.Type); err != nil {
		f.Type = firstLine(string(parts[0]))
	}
	if len(parts) > 1 {
		var args []json.RawMessage
		if json.Unmarshal(parts[1], &args) == nil {
			if len(args) > 0 {
				f.Message = jsonText(args[0])
			}
			if len(args) > 1 {
				f.Description = jsonText(args[1])
			}
		} else {
			f.Message = jsonText(parts[1])
		}
	}
	if f.Type == "" {
		f.Type = "error"
	}
	return f
}

// jsonText is a JSON string's value, or the JSON itself for anything else.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if bytes.Equal(raw, []byte("null")) {
		return ""
	}
	return string(raw)
}

// client is a small Tryton JSON-RPC client: it logs in with a user and password, keeps
// the session, and logs in again once when the session expired.
type client struct {
	base     string // http://host:port/<database>/
	user     string
	password string
	http     *http.Client
	logger   *slog.Logger

	mu      sync.Mutex
	seq     uint64
	session string         // "Session <base64(user:id:key)>"
	context map[string]any // the user's preferences (company, language)
}

func newClient(rawURL, database, user, password string, timeout time.Duration, logger *slog.Logger) (*client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + url.PathEscape(database) + "/"
	return &client{base: u.String(), user: user, password: password,
		http: &http.Client{Timeout: timeout}, logger: logger}, nil
}

func (c *client) post(ctx context.Context, auth, method string, params []any) (json.RawMessage, error) {
	c.mu.Lock()
	c.seq++
	id := c.seq
	c.mu.Unlock()
	body, err := json.Marshal(rpcRequest{ID: id, Method: method, Params: params})
	if err != nil {
		return nil, fmt.Errorf("tryton %s: encode request: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("tryton %s: %w", method, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tryton %s: %w", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("tryton %s: read answer: %w", method, err)
	}
	if len(b) > maxResponse {
		return nil, fmt.Errorf("tryton %s: answer larger than %d bytes; lower page_size", method, maxResponse)
	}
	return decodeResponse(method, resp.StatusCode, b)
}

// login opens a session and loads the user's preferences, which every call passes as
// its context (company, language).
func (c *client) login(ctx context.Context) error {
	res, err := c.post(ctx, "", "common.db.login", []any{c.user, map[string]any{"password": c.password}, "en"})
	if err != nil {
		if errors.Is(err, ErrAuth) {
			return fmt.Errorf("login as %q: %w: check user and password", c.user, err)
		}
		return fmt.Errorf("login as %q: %w", c.user, err)
	}
	var pair []json.RawMessage
	if err := json.Unmarshal(res, &pair); err != nil || len(pair) != 2 {
		return fmt.Errorf("login as %q: %w: unexpected answer %s", c.user, ErrProtocol, firstLine(string(res)))
	}
	var uid int64
	var key string
	if json.Unmarshal(pair[0], &uid) != nil || json.Unmarshal(pair[1], &key) != nil {
		return fmt.Errorf("login as %q: %w: unexpected answer %s", c.user, ErrProtocol, firstLine(string(res)))
	}
	session := "Session " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+strconv.FormatInt(uid, 10)+":"+key))
	prefs, err := c.post(ctx, session, "model.res.user.get_preferences", []any{true, map[string]any{}})
	if err != nil {
		return fmt.Errorf("read preferences of %q: %w", c.user, err)
	}
	var pctx map[string]any
	if err := json.Unmarshal(prefs, &pctx); err != nil {
		return fmt.Errorf("read preferences of %q: %w: %v", c.user, ErrProtocol, err)
	}
	c.mu.Lock()
	c.session, c.context = session, pctx
	c.mu.Unlock()
	return nil
}

// call runs a model method ("model.sale.sale.search_read") with args, appending the
// session context merged with extra. It logs in first if needed and once more when the
// session expired.
func (c *client) call(ctx context.Context, method string, extra map[string]any, args ...any) (json.RawMessage, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		session := c.session
		cctx := make(map[string]any, len(c.context)+len(extra))
		for k, v := range c.context {
			cctx[k] = v
		}
		c.mu.Unlock()
		if session == "" {
			if err := c.login(ctx); err != nil {
				return nil, err
			}
			continue
		}
		for k, v := range extra {
			cctx[k] = v
		}
		params := append(append([]any{}, args...), cctx)
		res, err := c.post(ctx, session, method, params)
		if errors.Is(err, ErrAuth) && attempt == 0 {
			c.logger.Info("tryton session ended; logging in again", "user", c.user)
			c.mu.Lock()
			c.session = ""
			c.mu.Unlock()
			continue
		}
		return res, err
	}
}

// model calls model.<name>.<method>.
func (c *client) model(ctx context.Context, name, method string, extra map[string]any, args ...any) (json.RawMessage, error) {
	return c.call(ctx, "model."+name+"."+method, extra, args...)
}

// into calls a model method and decodes its result into out.
func (c *client) into(ctx context.Context, out any, name, method string, extra map[string]any, args ...any) error {
	res, err := c.model(ctx, name, method, extra, args...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("tryton model.%s.%s: %w: %v", name, method, ErrProtocol, err)
	}
	return nil
}
