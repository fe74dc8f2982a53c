package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
)

// pageData is what every template gets.
type pageData struct {
	Title         string
	Node          string
	Leader        bool
	LeaderConsole string
	Session       bool
	CSRF          string
	Error         string
	Flash         string
	Next          string
	Took          time.Duration

	Agents       []Agent
	Connected    int
	Destinations []Destination
	Destination  *Destination
	DeadLetters  []DeadLetter
	Partners     []Partner
	Alerts       []Alert
	AlertsWired  bool
	Query        string
	Limit        int
	Timeline     *adminv1.GetTimelineResponse
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"ts": func(t *timestamppb.Timestamp) string {
		if t == nil {
			return "-"
		}
		return t.AsTime().UTC().Format("2006-01-02 15:04:05.000")
	},
	"tm": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"lag": func(micros int64) string {
		if micros == 0 {
			return "-"
		}
		return "+" + (time.Duration(micros) * time.Microsecond).Round(time.Millisecond).String()
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return d.Round(time.Second).String()
	},
	"micros": func(m int64) string {
		if m == 0 {
			return "-"
		}
		return (time.Duration(m) * time.Microsecond).Round(100 * time.Microsecond).String()
	},
	"rate": func(r float64) string {
		if r < 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f/s", r)
	},
	"keys": func(m map[string]string) string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for i, k := range ks {
			ks[i] = k + "=" + m[k]
		}
		return strings.Join(ks, " ")
	},
	"searchURL": func(k, v string) string { return "/ui/search?q=" + url.QueryEscape(k+"="+v) },
	"destURL":   func(name string) string { return "/ui/destinations/" + url.PathEscape(name) },
	"short": func(s string, n int) string {
		if len(s) > n {
			return s[:n-1] + "…"
		}
		return s
	},
	"calls": func(m map[string]uint64) string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for i, k := range ks {
			ks[i] = fmt.Sprintf("%s: %d", k, m[k])
		}
		return strings.Join(ks, ", ")
	},
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// render executes a page into a buffer first, so a template error is a clean 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, pd pageData) {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	defer bufPool.Put(b)
	if err := c.tmpl[page].Execute(b, pd); err != nil {
		c.log.Error("console: render page", "page", page, "err", err)
		http.Error(w, "console: render "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, pd pageData, page string, err error) {
	c.log.Warn("console: read for page", "page", page, "err", err)
	pd.Error = err.Error()
	c.render(w, r, http.StatusInternalServerError, page, pd)
}

func (c *Console) fleet(w http.ResponseWriter, r *http.Request, pd pageData) {
	pd.Title = "Fleet"
	start := time.Now()
	agents, err := c.cfg.Source.Agents(r.Context())
	if err != nil {
		c.fail(w, r, pd, "fleet", err)
		return
	}
	for _, a := range agents {
		if a.Connected {
			pd.Connected++
		}
	}
	pd.Agents, pd.Took = agents, time.Since(start)
	c.render(w, r, http.StatusOK, "fleet", pd)
}

func (c *Console) destinations(w http.ResponseWriter, r *http.Request, pd pageData) {
	pd.Title = "Destinations"
	start := time.Now()
	ds, err := c.cfg.Source.Destinations(r.Context())
	if err != nil {
		c.fail(w, r, pd, "destinations", err)
		return
	}
	pd.Destinations, pd.Took = ds, time.Since(start)
	c.render(w, r, http.StatusOK, "destinations", pd)
}

// SearchEvents is how many events (the newest) a search shows unless ?limit= says.
const SearchEvents = 20

// MaxDeadLettersShown bounds the dead letters a destination page lists.
const MaxDeadLettersShown = 200

func (c *Console) destination(w http.ResponseWriter, r *http.Request, pd pageData, name string) {
	pd.Title = "Destination " + name
	ds, err := c.cfg.Source.Destinations(r.Context())
	if err != nil {
		c.fail(w, r, pd, "destination", err)
		return
	}
	i := slices.IndexFunc(ds, func(d Destination) bool { return d.Name == name })
	if i < 0 {
		pd.Error = fmt.Sprintf("no destination %q (see the destinations page)", name)
		c.render(w, r, http.StatusNotFound, "destination", pd)
		return
	}
	pd.Destination = &ds[i]
	pd.DeadLetters, err = c.cfg.Source.DeadLetters(r.Context(), name, MaxDeadLettersShown)
	if err != nil {
		c.fail(w, r, pd, "destination", err)
		return
	}
	switch r.URL.Query().Get("retried") {
	case "":
	case "ok":
		pd.Flash = "Dead letter " + r.URL.Query().Get("id") + " queued for retry."
	default:
		pd.Error = "Retry refused: " + r.URL.Query().Get("retried")
	}
	c.render(w, r, http.StatusOK, "destination", pd)
}

func (c *Console) retry(w http.ResponseWriter, r *http.Request, who Principal) {
	id, dest := r.PostForm.Get("id"), r.PostForm.Get("destination")
	back := "/ui/destinations/" + url.PathEscape(dest)
	if err := c.cfg.Source.RetryDeadLetter(r.Context(), who, id); err != nil {
		c.log.Warn("console: dead letter retry refused", "id", id, "actor", who.Name, "err", err)
		http.Redirect(w, r, back+"?retried="+url.QueryEscape(err.Error())+"&id="+url.QueryEscape(id), http.StatusSeeOther)
		return
	}
	c.log.Info("console: dead letter queued for retry", "id", id, "destination", dest, "actor", who.Name, "audit", true)
	http.Redirect(w, r, back+"?retried=ok&id="+url.QueryEscape(id), http.StatusSeeOther)
}

func (c *Console) partners(w http.ResponseWriter, r *http.Request, pd pageData) {
	pd.Title = "Partners"
	start := time.Now()
	ps, err := c.cfg.Source.Partners(r.Context())
	if err != nil {
		c.fail(w, r, pd, "partners", err)
		return
	}
	pd.Partners, pd.Took = ps, time.Since(start)
	c.render(w, r, http.StatusOK, "partners", pd)
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request, pd pageData) {
	pd.Title = "Alerts"
	src := c.alertSource()
	if src != nil {
		pd.AlertsWired = true
		as, err := src.Alerts(r.Context())
		if err != nil {
			c.fail(w, r, pd, "alerts", err)
			return
		}
		pd.Alerts = as
	}
	c.render(w, r, http.StatusOK, "alerts", pd)
}

func (c *Console) search(w http.ResponseWriter, r *http.Request, pd pageData) {
	pd.Title = "Search"
	pd.Query = strings.TrimSpace(r.URL.Query().Get("q"))
	if pd.Query == "" {
		c.render(w, r, http.StatusOK, "search", pd)
		return
	}
	keys, err := ParseKeys([]string{pd.Query})
	if err != nil {
		pd.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "search", pd)
		return
	}
	// The newest SearchEvents events by default (each lists every destination it goes
	// to, so a page grows with events × destinations); ?limit= up to 1000.
	pd.Limit = SearchEvents
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
		pd.Limit = min(n, 1000)
	}
	start := time.Now()
	tl, err := c.cfg.Source.Timeline(r.Context(), keys, pd.Limit)
	if err != nil {
		c.fail(w, r, pd, "search", err)
		return
	}
	pd.Timeline, pd.Took = tl, time.Since(start)
	c.render(w, r, http.StatusOK, "search", pd)
}

// MoreLimit is the limit of the search page's "show more" link.
func (p pageData) MoreLimit() int { return min(max(p.Limit, 1)*5, 1000) }
