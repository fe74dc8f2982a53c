// Command partnerapi measures the partner API: GetAvailability for 10 SKUs over HTTP/2
// (TLS) with an API key against a one-node control plane in this process, side by side
// with a Connect handler that returns a constant answer over the same transport (the
// ceiling: what Connect, TLS and HTTP/2 cost on this machine). It reports the most
// requests/s (closed loop, -conc callers) and p50/p99 latency at a fixed rate (open loop).
// The views are a static in-memory reader (the real views are wired in by the lead).
//
//	go run ./bench/partnerapi -duration 5s -rate 5000
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/crossdock/crossdock/controlplane"
	"github.com/crossdock/crossdock/controlplane/partner"
	"github.com/crossdock/crossdock/internal/cliconfig"
	partnerv1 "github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/partner/v1/partnerv1connect"
	routingv1 "github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/routing/v1/routingv1connect"
)

const docs = `apiVersion: crossdock.io/v1
kind: Tier
metadata: {name: bench}
spec: {requestsPerSecond: 100000, burst: 100000, dailyQuota: 1073741824, maxItemsPerCall: 100}
---
apiVersion: crossdock.io/v1
kind: Partner
metadata: {name: bench}
spec:
  tier: bench
  scopes: [availability:read]
  locations: [WH-1, WH-2, WH-3]
  skus: ["SKU-*"]
  allocation: {percent: 80, safetyStock: 5}
`

func main() {
	duration := flag.Duration("duration", 3*time.Second, "length of each measurement")
	rate := flag.Int("rate", 5000, "requests/s of the fixed-rate measurement")
	conc := flag.Int("conc", 64, "concurrent callers of the throughput measurement")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the partner API's throughput phase to this file")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err := run(*duration, *rate, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "partnerapi:", err)
		os.Exit(1)
	}
}

// staticViews is a fixed Reader: 1,000 SKUs in 3 locations.
type staticViews struct{ levels map[string][]partner.Level }

func newStaticViews() *staticViews {
	v := &staticViews{levels: map[string][]partner.Level{}}
	at := time.Now()
	for i := range 1000 {
		sku := fmt.Sprintf("SKU-%05d", i)
		for _, loc := range []string{"WH-1", "WH-2", "WH-3"} {
			v.levels[sku] = append(v.levels[sku], partner.Level{SKU: sku, Location: loc, Available: fmt.Sprint(i % 97), OnHand: "100", UnitOfMeasure: "EA", Seq: uint64(i + 1), At: at})
		}
	}
	return v
}

func (v *staticViews) Seq() uint64                                 { return 1000 }
func (v *staticViews) WaitFor(ctx context.Context, _ uint64) error { return nil }
func (v *staticViews) Levels(skus, locs []string) []partner.Level {
	var out []partner.Level
	for _, s := range skus {
		for _, l := range v.levels[s] {
			if locs == nil || slices.Contains(locs, l.Location) {
				out = append(out, l)
			}
		}
	}
	return out
}
func (v *staticViews) Prices([]string, string) []partner.PriceEntry { return nil }
func (v *staticViews) Items(string, int, func(string) bool) ([]partner.ItemEntry, string) {
	return nil, ""
}

// constant is the ceiling: a Connect handler that answers a fixed response.
type constant struct {
	partnerv1connect.UnimplementedPartnerServiceHandler
	res *partnerv1.GetAvailabilityResponse
}

func (c *constant) GetAvailability(context.Context, *connect.Request[partnerv1.GetAvailabilityRequest]) (*connect.Response[partnerv1.GetAvailabilityResponse], error) {
	return connect.NewResponse(c.res), nil
}

var cpuProfile string

func run(duration time.Duration, rate, conc int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "partnerapi-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := controlplane.New(ctx, controlplane.Config{NodeID: "bench", DataDir: filepath.Join(dir, "cp"), Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0",
		Bootstrap: true, DisableHTTP3: true, PartnerViews: newStaticViews()})
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() { stop(); <-done }()
	cfg, err := cliconfig.Load(srv.AdminConfigPath())
	if err != nil {
		return err
	}
	hc, base, closeFn, err := cfg.HTTPClient()
	if err != nil {
		return err
	}
	defer closeFn()
	if _, err := routingv1connect.NewRoutingServiceClient(hc, base).ApplyDocuments(ctx, connect.NewRequest(&routingv1.ApplyDocumentsRequest{Yaml: docs})); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	key, err := partnerv1connect.NewPartnerAdminServiceClient(hc, base).CreateKey(ctx, connect.NewRequest(&partnerv1.CreateKeyRequest{Partner: "bench"}))
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cfg.CAPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req := &partnerv1.GetAvailabilityRequest{}
	for i := range 10 {
		req.Skus = append(req.Skus, fmt.Sprintf("SKU-%05d", i*37))
	}
	real := partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: bearer{key.Msg.GetKey(), tr}}, "https://"+srv.Addr())
	first, err := real.GetAvailability(ctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("first call: %w", err)
	}

	// The ceiling: the same answer from a constant handler, TLS and HTTP/2 as well.
	mux := http.NewServeMux()
	mux.Handle(partnerv1connect.NewPartnerServiceHandler(&constant{res: first.Msg}, connect.WithCompressMinBytes(8<<10))) // as the real one
	ts := httptest.NewUnstartedServer(mux)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	cpool := x509.NewCertPool()
	cpool.AddCert(ts.Certificate())
	ceilTr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cpool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: true}
	defer ceilTr.CloseIdleConnections()
	for _, u := range []struct {
		tr  *http.Transport
		url string
	}{{tr, "https://" + srv.Addr() + "/openapi/partner.v1.yaml"}, {ceilTr, ts.URL}} {
		res, err := (&http.Client{Transport: u.tr}).Get(u.url)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.ProtoMajor != 2 {
			return fmt.Errorf("%s answered over %s, not HTTP/2", u.url, res.Proto)
		}
	}
	ceiling := partnerv1connect.NewPartnerServiceClient(&http.Client{Transport: ceilTr}, ts.URL)

	fmt.Printf("partnerapi GetAvailability skus=10 answer_entries=%d transport=h2+tls conc=%d duration=%s (shared machine: figures vary with other load)\n",
		len(first.Msg.GetAvailability()), conc, duration)
	for _, c := range []struct {
		name   string
		client partnerv1connect.PartnerServiceClient
	}{{"constant-ceiling", ceiling}, {"partner-api", real}} {
		if cpuProfile != "" && c.name == "partner-api" {
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
		}
		rps, errs := throughput(c.client, req, conc, duration)
		if cpuProfile != "" && c.name == "partner-api" {
			pprof.StopCPUProfile()
		}
		fmt.Printf("  %-16s max_req_per_s=%.0f errors=%d\n", c.name, rps, errs)
	}
	for _, c := range []struct {
		name   string
		client partnerv1connect.PartnerServiceClient
	}{{"constant-ceiling", ceiling}, {"partner-api", real}} {
		p50, p99, late, errs := fixedRate(c.client, req, rate, duration)
		fmt.Printf("  %-16s at_%d_req_per_s: p50=%s p99=%s late_ticks=%d errors=%d\n",
			c.name, rate, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), late, errs)
	}
	return nil
}

type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}

// throughput runs conc closed-loop callers for d and returns requests/s.
func throughput(c partnerv1connect.PartnerServiceClient, req *partnerv1.GetAvailabilityRequest, conc int, d time.Duration) (float64, int64) {
	var n, errs atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := c.GetAvailability(context.Background(), connect.NewRequest(req)); err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "partnerapi: first error in the throughput run:", err)
					}
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), errs.Load()
}

// fixedRate starts rate requests per second for d (open loop: each at its scheduled
// time, whatever the previous ones do; started in 1ms ticks) and returns the p50 and p99
// latency measured from the scheduled start, and how many ticks started over 1ms late.
// A call is given up after 5s (counted as an error, with the 5s as its latency).
func fixedRate(c partnerv1connect.PartnerServiceClient, req *partnerv1.GetAvailabilityRequest, rate int, d time.Duration) (p50, p99 time.Duration, late int, errs int64) {
	total := int(d.Seconds() * float64(rate))
	lat := make([]time.Duration, total)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	var e atomic.Int64
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	i := 0
	for i < total {
		now := <-tick.C
		if now.Sub(start.Add(time.Duration(i)*interval)) > 2*time.Millisecond {
			late++
		}
		for ; i < total && !start.Add(time.Duration(i)*interval).After(now); i++ {
			at := start.Add(time.Duration(i) * interval)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := c.GetAvailability(ctx, connect.NewRequest(req)); err != nil {
					if e.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "partnerapi: first error at fixed rate:", err)
					}
				}
				lat[i] = time.Since(at)
			}(i)
		}
	}
	wg.Wait()
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	return lat[total/2], lat[total*99/100], late, e.Load()
}
