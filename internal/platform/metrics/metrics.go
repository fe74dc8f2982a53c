// Package metrics serves Prometheus metrics and health endpoints on a plain-HTTP
// listener (--metrics-listen). Collectors live next to what they measure and read
// existing state when scraped (pull-based), so nothing is added to hot paths.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gmprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every Crossdock metric.
const Namespace = "crossdock"

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Check reports why a process is not ready, or nil when it is.
type Check func() error

// Health serves /healthz (200 while the process serves) and /readyz (200 when ready
// is nil, else 503 with the reason as plain text). Neither needs a token.
func Health(mux *http.ServeMux, ready Check) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// Handler is the metrics listener's handler: /metrics from reg, /healthz and /readyz.
func Handler(reg *prometheus.Registry, ready Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	Health(mux, ready)
	return mux
}

// Listener is a started metrics listener.
type Listener struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (so a busy port fails at start) and serves h on it until Close.
func Listen(addr string, h http.Handler, logger *slog.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s (--metrics-listen; empty disables it): %w", addr, err)
	}
	l := &Listener{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}}
	go func() {
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && logger != nil {
			logger.Error("metrics listener stopped", "addr", addr, "err", err)
		}
	}()
	return l, nil
}

// Addr is the bound address.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Close stops serving.
func (l *Listener) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	return l.srv.Close()
}

// RaftPrefixes are the hashicorp/raft metrics bridged into Prometheus: leadership
// states and transitions (counters). Raft's timers are not bridged: go-metrics turns
// them into Prometheus summaries whose every observation (each applied entry) and
// every scrape take one lock, and scraping them every second cost 4 to 9% of a loaded
// cluster's ingest (docs/operations.md, Monitoring). Commit and apply latency are
// histograms the control plane measures itself (crossdock_raft_fsm_apply_seconds,
// crossdock_raft_commit_apply_latency_seconds). Everything else raft emits is dropped
// at the go-metrics filter, before any work in the sink.
var RaftPrefixes = []string{"raft.state", "raft.transition"}

var (
	hcOnce sync.Once
	hcSink *gmprom.PrometheusSink
	hcErr  error
)

// HashicorpSink installs (once per process) a go-metrics global sink that bridges
// hashicorp/raft's metrics to Prometheus, and returns it as a collector to register
// in a registry. go-metrics is process-global: in-process test clusters share it.
// Names are go-metrics' flattened keys with the crossdock prefix, e.g.
// crossdock_raft_commitTime (a summary in milliseconds).
func HashicorpSink() (prometheus.Collector, error) {
	hcOnce.Do(func() {
		// The sink registers itself; give it a registry of its own so it does not land in
		// the default one, and register it where it is wanted.
		hcSink, hcErr = gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: prometheus.NewRegistry(), Expiration: 0})
		if hcErr != nil {
			hcErr = fmt.Errorf("metrics: go-metrics prometheus sink: %w", hcErr)
			return
		}
		conf := gometrics.DefaultConfig(Namespace)
		conf.EnableHostname = false
		conf.EnableHostnameLabel = false
		conf.EnableServiceLabel = false
		conf.EnableRuntimeMetrics = false
		conf.FilterDefault = false
		for _, p := range RaftPrefixes { // go-metrics filters on the key with the service name in front
			conf.AllowedPrefixes = append(conf.AllowedPrefixes, Namespace+"."+p)
		}
		_, hcErr = gometrics.NewGlobal(conf, hcSink)
		if hcErr != nil {
			hcErr = fmt.Errorf("metrics: go-metrics global: %w", hcErr)
		}
	})
	return hcSink, hcErr
}

// Gauge is a shorthand for a const gauge sample.
func Gauge(desc *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
}

// Counter is a shorthand for a const counter sample.
func Counter(desc *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
}

// Desc is a shorthand for a crossdock_ metric description.
func Desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}
